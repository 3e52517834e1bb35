"""Scale-out through the CLI: --device / --workers / --sync-bn checks, and batch-size's
distributed variant (2 gloo processes, BN per worker: the GN paper's per-GPU statistics),
which equals the single-process ghost-BN run and resumes exactly after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from tests.commands import ENV, NORMLAB, normlab

ARGS = ("reproduce", "batch-size", "--quick", "--data", "digits", "--engine", "torch",
        "--seeds", "1", "--jobs", "1", "--steps-scale", "0.2")


@pytest.mark.parametrize("args,words", [
    (["--device", "cuda", "--engine", "torch"], "no usable CUDA GPU"),
    (["--device", "tpu", "--engine", "torch"], "--device"),
    (["--device", "cpu"], "--engine torch"),
    (["--workers", "3", "--engine", "torch"], "divides every experiment's batch"),
    (["--workers", "2"], "--engine torch"),
    (["--sync-bn", "--engine", "torch"], "--workers 2 or 4"),
])
def test_scale_out_options_are_checked_first(torch, args, words, tmp_path):
    proc = normlab("reproduce", "init-scale", "--out", tmp_path / "out", *args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and words in proc.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def _metrics(out):
    res = json.loads((out / "results.json").read_text())
    return {k: r["metrics"]["1000"] for k, r in res["experiments"]["batch-size"]["runs"].items()}


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "out"
    proc = normlab(*ARGS, "--workers", "2", "--out", out)
    assert proc.returncode == 0, proc.stderr
    return out


def test_two_workers_equal_ghost_bn_in_one_process(torch, two_workers, tmp_path):
    proc = normlab(*ARGS, "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    ddp, ghost = _metrics(two_workers)["batch-g16"], _metrics(tmp_path)["batch-g16"]
    # the same float32 sums in another order: rounding-level differences only
    np.testing.assert_allclose(ddp["train_loss"][1:], ghost["train_loss"][1:], rtol=1e-5)
    assert ddp["val_acc"] == ghost["val_acc"] and ddp["test_acc"] == ghost["test_acc"]
    res = json.loads((two_workers / "results.json").read_text())
    assert res["config"]["workers"] == 2 and res["config"]["sync_bn"] is False


def test_kill_9_under_two_workers_resumes_exactly(torch, two_workers, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen([*NORMLAB, *ARGS, "--workers", "2", "--out", str(out)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    partial = out / "checkpoints" / "batch-size" / "seed1000" / "batch-g16.partial"
    deadline = time.monotonic() + 120
    while not partial.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / "results.json").exists()
    resumed = normlab(*ARGS, "--workers", "2", "--out", out)
    assert resumed.returncode == 0, resumed.stderr
    assert _metrics(out) == _metrics(two_workers)


def test_experiments_that_reach_into_their_model_train_in_one_process(torch, tmp_path):
    proc = normlab("reproduce", "regularization", "--quick", "--data", "digits", "--engine",
                   "torch", "--seeds", "1", "--workers", "2", "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "trains in one process; --workers 2 ignored here" in " ".join(proc.stderr.split())
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["config"]["workers"] == 2 and res["experiments"]["regularization"]["verdict"]
