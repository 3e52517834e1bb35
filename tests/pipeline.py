"""Run experiments through the real reproduce pipeline at CI size, in-process."""

from __future__ import annotations

from pathlib import Path

import pytest

from normlab.reproduce import Options, finalize, run_all

CI_SCALE = 0.02


def run_ci_pipeline(names: list[str], out: Path, dataset) -> dict:
    """``reproduce --quick`` shrunk to CI size on ``dataset`` (digits), with the pure-NumPy
    kernels: numba's first-call compile time dwarfs these tiny runs (the kernels have their own
    parity tests). Writes results, figures and the report into ``out``; returns the results."""
    mp = pytest.MonkeyPatch()
    mp.setenv("NORMLAB_KERNELS", "numpy")
    try:
        results = run_all(Options(names, True, "digits", "numpy", out, 0, CI_SCALE), dataset,
                          warn=lambda m: None)
        finalize(out, results)
    finally:
        mp.undo()
    return results
