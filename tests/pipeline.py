"""Run experiments through the real reproduce pipeline at CI size, in-process."""

from __future__ import annotations

from pathlib import Path

import pytest

from normlab.reproduce import Options, finalize, run_all

CI_SCALE = 0.02


def run_ci_pipeline(names: list[str], out: Path, dataset, seeds: int = 2) -> dict:
    """``reproduce --quick`` shrunk to CI size on ``dataset`` (digits) over ``seeds`` seeds, in
    this process, with the pure-NumPy kernels: numba's first-call compile time dwarfs these
    tiny runs (the kernels have their own parity tests). Writes results, figures and the report
    into ``out``; returns the results."""
    mp = pytest.MonkeyPatch()
    mp.setenv("NORMLAB_KERNELS", "numpy")
    try:
        results = run_all(Options(names=names, size="quick", data_spec="digits", engine="numpy",
                                  out=out, seed=0, steps_scale=CI_SCALE, seeds=seeds),
                          dataset, warn=lambda m: None)
        finalize(out, results)
    finally:
        mp.undo()
    return results


def seed_metrics(results: dict, name: str, seed: int | None = None) -> dict:
    """run key -> metrics of one seed (default: the first), from a results dict."""
    seed = results["config"]["seeds"][0] if seed is None else seed
    return {k: v["metrics"][str(seed)] for k, v in results["experiments"][name]["runs"].items()}


SAME_SEEDS = 9   # equal on every seed is judged by the sign test: 0.5^9 clears Holm's 0.025 / 7


def verdict(name: str, metrics: dict, runs=()) -> str:
    """The verdict of ``name`` when every one of nine seeds measured ``metrics`` (without the
    runs' test-example correctness: the synthetic accuracies a test writes are what is judged)."""
    from normlab.experiments import get
    from normlab.runner.testnoise import CORRECT

    plain = {k: {f: v for f, v in m.items() if f != CORRECT} if isinstance(m, dict) else m
             for k, m in metrics.items()}
    return get(name).summarize(list(runs), dict.fromkeys(range(SAME_SEEDS), plain)).verdict
