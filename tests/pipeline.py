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
        results = run_all(Options(names, True, "digits", "numpy", out, 0, CI_SCALE, seeds),
                          dataset, warn=lambda m: None)
        finalize(out, results)
    finally:
        mp.undo()
    return results


def seed_metrics(results: dict, name: str, seed: int = 0) -> dict:
    """run key -> metrics of one seed, from a results dict."""
    return {k: v["metrics"][str(seed)] for k, v in results["experiments"][name]["runs"].items()}


def verdict(name: str, metrics: dict, runs=()) -> str:
    """The verdict of ``name`` when every one of two seeds measured ``metrics``."""
    from normlab.experiments import get

    return get(name).summarize(list(runs), {0: metrics, 1: metrics}).verdict
