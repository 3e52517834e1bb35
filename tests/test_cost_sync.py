"""cost's SyncBN part (issue 25 item 7): a step over 2 gloo processes that cannot run, or
overruns its budget, is recorded as not measured instead of failing or hanging the run."""

from __future__ import annotations

import math

import pytest

from normlab import data
from normlab.experiments import cost, get
from normlab.runner.base import RunContext


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def _sync_run(digits, **over):
    e = get("cost")
    run = [r for r in e.runs(digits, 0.02, "quick") if r.key == "sync"][0]
    return e.run(RunContext("cost", "sync", digits, "numpy", 3, "t"), {**run.config, **over})


def test_a_failing_start_is_recorded_in_one_line(digits, torch, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("gloo: no interface\nsecond line")

    monkeypatch.setattr(cost, "make_trainer", refuse)
    m = _sync_run(digits)
    assert m["sync_unavailable"] == "RuntimeError: gloo: no interface"
    assert "sync_step_ms" not in m


def test_an_overrun_stops_its_workers_and_is_recorded(digits, torch, monkeypatch):
    monkeypatch.setattr(cost, "SYNC_TIMEOUT_S", 0.5)
    m = _sync_run(digits, repeats=100_000)
    assert m["sync_unavailable"] == "over 0.5 s, workers stopped"


def test_a_missing_part_gets_no_number():
    e = get("cost")
    metrics = {"train": {"step_ms": {"True": [2.0] * 5, "False": [1.0] * 5},
                         "load_average": [1.0]},
               "infer": {"eval_ms": {"bn": [1.2] * 5, "folded": [1.0] * 5, "plain": [1.0] * 5},
                         "kept_per_layer": 2.0, "activation_bytes": 1.0,
                         "fold_max_abs_error": 0.0},
               "sync": {"sync_unavailable": "over 120 s, workers stopped"}}
    assert math.isnan(e.statistics([], metrics)[cost.SYNC])
