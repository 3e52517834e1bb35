"""Shared test fixtures, the hypothesis profiles and the optional-dependency policy.

Tests that need torch, the Debian Fashion-MNIST package or Chromium skip locally with a reason;
with NORMLAB_REQUIRE_ALL=1 (set by .ci/run) a missing dependency fails the test instead.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import settings

from tests.commands import QUICK, normlab

# No per-example deadline: the first example of a test compiles numba kernels or builds a
# model, and the shared 2-core CI machine makes any wall-clock bound flaky. CI (CI=true) also
# explores a fixed, seed-derived set of examples so that a submission's verdict does not depend
# on luck; local runs keep hypothesis's random exploration to find new cases.
settings.register_profile("normlab", deadline=None)
settings.register_profile("ci", parent=settings.get_profile("normlab"), derandomize=True,
                          print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "normlab")

REQUIRE_ALL = os.environ.get("NORMLAB_REQUIRE_ALL") == "1"


def require(what: str, available: bool, hint: str = "") -> None:
    """Skip (or, under NORMLAB_REQUIRE_ALL=1, fail) when ``what`` is unavailable."""
    if available:
        return
    msg = f"{what} is not available" + (f" ({hint})" if hint else "")
    if REQUIRE_ALL:
        pytest.fail(msg + " and NORMLAB_REQUIRE_ALL=1 forbids skipping")
    pytest.skip(msg)


@pytest.fixture(scope="session")
def torch():
    try:
        import torch as _torch
    except ImportError:
        _torch = None
    require("torch", _torch is not None, "pip install torch==2.13.0")
    _torch.set_num_threads(1)
    return _torch


@pytest.fixture(scope="session")
def numba():
    """The numba kernels' compiler. Not pytest's import-or-skip helper: that skips even under
    NORMLAB_REQUIRE_ALL=1, so a broken numba would silently drop the kernel parity tests."""
    try:
        import numba as _numba
    except Exception as exc:   # ImportError, or a broken install (llvmlite's library missing)
        _numba, why = None, f"{type(exc).__name__}: {exc}"
    else:
        why = ""
    require("numba", _numba is not None, why or "pip install numba")
    return _numba


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's 8x8 digits: the dataset of the CI-size pipelines."""
    from normlab import data

    return data.load("digits")


@pytest.fixture
def numpy_kernels(monkeypatch):
    """The pure-NumPy kernels (NORMLAB_KERNELS=numpy): numba's first-call compile time dwarfs
    the tiny CI-size runs, and the kernels have their own parity tests."""
    monkeypatch.setenv("NORMLAB_KERNELS", "numpy")


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> Path:
    """One uninterrupted quick reproduction on `digits` at CI size, 2 seeds, 2 processes."""
    out = tmp_path_factory.mktemp("digits") / "out"
    proc = normlab("reproduce", "paper-fig1", "init-scale", *QUICK, "--jobs", "2", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert f"Report: {(out / 'report.html').resolve()}" in proc.stdout.replace("\n", "")
    return out


@pytest.fixture(scope="session")
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    require("chromium", path is not None, "apt-get install chromium")
    return path
