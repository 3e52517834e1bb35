"""cost's SyncBN part (issue 25 item 7): a step over 2 gloo processes that cannot run, or
overruns its budget, is recorded as not measured instead of failing or hanging the run."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time

import pytest

from normlab import data
from normlab.experiments import cost, get
from normlab.runner.base import RunContext


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


# the other parts' metrics of one seed, for statistics() (values are arbitrary)
_METRICS = {"train": {"step_ms": {"True": [2.0] * 5, "False": [1.0] * 5}, "load_average": [1.0]},
            "infer": {"eval_ms": {"bn": [1.2] * 5, "folded": [1.0] * 5, "plain": [1.0] * 5},
                      "kept_per_layer": 2.0, "activation_bytes": 1.0, "fold_max_abs_error": 0.0}}


def _sync_run(digits, **over):
    e = get("cost")
    run = [r for r in e.runs(digits, 0.02, "full") if r.key == "sync"][0]
    return e.run(RunContext("cost", "sync", digits, "numpy", 3, "t"), {**run.config, **over})


def test_two_pools_of_two_gloo_processes_are_timed(digits, torch):
    m = _sync_run(digits, repeats=3)
    assert m["sync_workers"] == 2 and "sync_unavailable" not in m
    assert {k: len(v) for k, v in m["sync_step_ms"].items()} == {"True": 3, "False": 3}
    assert all(t > 0 for v in m["sync_step_ms"].values() for t in v)
    assert m["processor"] and m["cpus"] >= 1


def test_quick_size_does_not_start_workers(digits):
    e = get("cost")
    run = [r for r in e.runs(digits, 0.02, "quick") if r.key == "sync"][0]
    m = e.run(RunContext("cost", "sync", digits, "numpy", 3, "t"), run.config)
    assert m["sync_unavailable"] == cost.QUICK_SYNC
    assert math.isnan(e.statistics([], {**_METRICS, "sync": m})[cost.SYNC])


def test_a_failing_start_is_recorded_in_one_line(digits, torch, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("gloo: no interface\nsecond line")

    monkeypatch.setattr(cost, "make_trainer", refuse)
    m = _sync_run(digits)
    assert m["sync_unavailable"] == "RuntimeError: gloo: no interface"
    assert "sync_step_ms" not in m


class _HungTrainer:
    """Stands in for a DistributedTrainer whose collective never returns: its one "worker"
    is a sleeping process, and like the real pool it raises WorkerError once that is gone."""

    def __init__(self, *args, **kwargs):
        self.proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        self.pids = [self.proc.pid]

    def train_step(self, x, y):
        from normlab.engines.torch.ddp import WorkerError

        self.proc.wait()
        raise WorkerError("worker 0 died")

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def test_an_overrun_stops_its_workers_and_is_recorded(digits, torch, monkeypatch):
    made = []
    monkeypatch.setattr(cost, "SYNC_TIMEOUT_S", 0.5)
    monkeypatch.setattr(cost, "make_trainer", lambda *a, **k: made.append(_HungTrainer()) or
                        made[-1])
    t0 = time.perf_counter()
    m = _sync_run(digits)
    assert m["sync_unavailable"] == "over 0.5 s, workers stopped"
    assert time.perf_counter() - t0 < 30
    assert len(made) == 2 and all(t.proc.returncode == -signal.SIGKILL for t in made)


def test_a_missing_part_gets_no_number():
    metrics = {**_METRICS, "sync": {"sync_unavailable": "over 120 s, workers stopped"}}
    assert math.isnan(get("cost").statistics([], metrics)[cost.SYNC])
