"""The test set's sampling noise: per-example correctness, kept compactly, and a paired bootstrap
over the test examples.

Every seed of an experiment is evaluated on the same test set, so the noise of having drawn that
set (a standard error of ~0.7 points for an accuracy near 0.95 on 1,000 images) is common to all
seeds: no spread over seeds can show it. A run keeps, for each test accuracy it reports, which
test examples it got right (``metrics["correct"]``: the metrics path -> :func:`pack`-ed bits).
:func:`replicates` redraws the test set B times -- multinomial counts over its examples, the same
draw for every seed and every run (paired: two arms compared on one test set share its noise) --
recomputes every such accuracy as the weighted mean of its correctness, and recomputes the
experiment's statistics from them. The variance of a statistic's seed mean over the B redraws is
what :func:`normlab.runner.evidence.interval` adds to the between-seed variance. The generator
seed is fixed, so a report is reproducible bit for bit.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

import numpy as np

CORRECT = "correct"       # metrics key of a run's correctness vectors
B = 1000                  # bootstrap resamples of the test set
GENERATOR_SEED = 24       # fixed: the same report from the same results, every time
CHUNK = 50                # resamples drawn and applied at once (bounds memory on 10,000 images)


def pack(correct: np.ndarray) -> str:
    """A boolean vector as base64 of its packed bits (1,000 examples: 168 characters)."""
    return base64.b64encode(np.packbits(np.asarray(correct, dtype=bool)).tobytes()).decode()


def unpack(text: str, n: int) -> np.ndarray:
    """The first ``n`` bits of a :func:`pack`-ed vector, as booleans."""
    bits = np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))
    if bits.size < n:
        raise ValueError(f"text: expected at least {n} packed bits, got {bits.size}")
    return bits[:n].astype(bool)


def record(metrics: dict, path: str, correct: np.ndarray) -> float:
    """Keep ``correct`` for the accuracy at ``path`` (dots into dicts/lists) of a run's metrics;
    returns the accuracy."""
    metrics.setdefault(CORRECT, {})[path] = pack(correct)
    metrics["n_test"] = int(np.asarray(correct).size)
    return float(np.mean(correct))


def unpacked(metrics: dict, path: str) -> np.ndarray:
    """The correctness vector a run keeps for ``path``."""
    return unpack(metrics[CORRECT][path], metrics["n_test"])


def _set(metrics: dict, path: str, value: float) -> dict:
    """A copy of ``metrics`` with the value at ``path`` replaced (containers on the path copied,
    everything else shared)."""
    head, _, rest = path.partition(".")
    if isinstance(metrics, list):
        out = list(metrics)
        i = int(head)
        out[i] = _set(out[i], rest, value) if rest else value
        return out
    out = dict(metrics)
    out[head] = _set(out[head], rest, value) if rest else value
    return out


def vectors(by_seed: dict) -> list[tuple[int, str, str, np.ndarray]]:
    """Every (seed, run, path, correctness) of an experiment's metrics."""
    out = []
    for seed, runs in by_seed.items():
        for key, m in runs.items():
            if isinstance(m, dict) and m.get(CORRECT):
                n = m["n_test"]
                out += [(seed, key, path, unpack(bits, n)) for path, bits in m[CORRECT].items()]
    return out


def replicates(by_seed: dict, statistics: Callable[[dict], dict], b: int = B,
               generator_seed: int = GENERATOR_SEED) -> list[dict] | None:
    """``statistics(metrics of one seed)`` under ``b`` paired redraws of the test set: a list of
    b dicts, seed -> statistics. None when no run kept its correctness."""
    vecs = vectors(by_seed)
    if not vecs:
        return None
    n = {v[3].size for v in vecs}
    if len(n) != 1:
        raise ValueError(f"by_seed: expected one test set size for every run, got {sorted(n)}")
    n_test = n.pop()
    correct = np.stack([v[3] for v in vecs]).astype(np.float64)
    rng = np.random.default_rng(generator_seed)
    out = []
    for start in range(0, b, CHUNK):
        counts = rng.multinomial(n_test, np.full(n_test, 1.0 / n_test),
                                 size=min(CHUNK, b - start)).astype(np.float64)
        acc = (correct @ counts.T) / n_test            # vectors x resamples
        for j in range(acc.shape[1]):
            seeds = {s: dict(m) for s, m in by_seed.items()}
            for (seed, key, path, _), value in zip(vecs, acc[:, j], strict=True):
                seeds[seed][key] = _set(seeds[seed][key], path, float(value))
            out.append({s: statistics(m) for s, m in seeds.items()})
    return out
