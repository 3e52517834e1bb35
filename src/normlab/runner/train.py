"""Mini-batch streams and evaluation shared by the experiments, the same on both engines.

Mini-batches are a pure function of (seed, step), so a resumed run draws exactly the batches
the uninterrupted run would have drawn; :func:`evaluate` works on any trainer of
:mod:`normlab.engines`.
"""

from __future__ import annotations

import numpy as np


def epoch_batch(seed_seq: np.random.SeedSequence, n: int, batch: int, step: int) -> np.ndarray:
    """Indices of mini-batch ``step`` when every epoch is a fresh permutation (no replacement).

    The stream is the concatenation of per-epoch permutations, each seeded by (seed_seq, epoch),
    so batch ``step`` is computed from ``step`` alone (nothing to carry across a resume).
    """
    start = step * batch
    out = []
    while len(out) < batch:
        epoch, pos = divmod(start + len(out), n)
        perm = _epoch_permutation(seed_seq, n, epoch)
        out.extend(perm[pos:pos + batch - len(out)])
    return np.asarray(out, dtype=np.int64)


_PERM_CACHE: dict = {}


def _epoch_permutation(seed_seq: np.random.SeedSequence, n: int, epoch: int) -> np.ndarray:
    key = (tuple(seed_seq.entropy) if isinstance(seed_seq.entropy, list) else seed_seq.entropy,
           n, epoch)
    perm = _PERM_CACHE.get(key)
    if perm is None:
        words = list(np.atleast_1d(seed_seq.entropy)) + [epoch]
        perm = np.random.default_rng(np.random.SeedSequence(words)).permutation(n)
        _PERM_CACHE.clear()  # only the current epoch is ever needed again
        _PERM_CACHE[key] = perm
    return perm


def replacement_batch(seed_seq: np.random.SeedSequence, n: int, batch: int,
                      step: int) -> np.ndarray:
    """Indices of mini-batch ``step`` drawn with replacement (the textbook's np.random.choice)."""
    words = list(np.atleast_1d(seed_seq.entropy)) + [step]
    return np.random.default_rng(np.random.SeedSequence(words)).choice(n, batch)


def evaluate_correct(trainer, x: np.ndarray, y: np.ndarray, chunk: int = 2000) -> np.ndarray:
    """Which examples of ``x`` the trainer classifies correctly (eval mode), as booleans: what
    the test-set bootstrap of :mod:`normlab.runner.testnoise` resamples."""
    out = [trainer.forward_eval(x[s:s + chunk])[0].argmax(axis=1) == y[s:s + chunk]
           for s in range(0, len(x), chunk)]
    return np.concatenate(out) if out else np.zeros(0, dtype=bool)


def evaluate(trainer, x: np.ndarray, y: np.ndarray, tap: int | None = None,
             chunk: int = 2000) -> tuple[float, np.ndarray | None]:
    """(accuracy, tapped layer input over all of x) in eval mode, in chunks to bound memory."""
    correct, taps = 0, []
    for s in range(0, len(x), chunk):
        logits, tapped = trainer.forward_eval(x[s:s + chunk], tap)
        correct += int((logits.argmax(axis=1) == y[s:s + chunk]).sum())
        if tapped is not None:
            taps.append(tapped)
    return correct / max(len(x), 1), (np.concatenate(taps) if taps else None)
