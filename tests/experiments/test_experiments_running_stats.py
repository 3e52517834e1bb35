"""running-stats through the real pipeline at CI size on `digits`: estimators, the poisoned and
the skipped run, verdicts that follow the numbers, and the torch engine."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from normlab.engines import make_trainer
from normlab.engines.spec import mlp_spec
from normlab.experiments import get
from normlab.experiments.running_stats import configure_bn, fp16_overflow, log2_grid, needed
from normlab.runner.base import VERDICTS, RunContext
from tests.pipeline import run_ci_pipeline, seed_metrics, verdict

NAME = "running-stats"


pytestmark = pytest.mark.usefixtures("numpy_kernels")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp("running_stats")
    return out, run_ci_pipeline([NAME], out, digits)


def _metrics(results):
    return seed_metrics(results, NAME)


def test_runs_end_to_end(pipeline):
    out, results = pipeline
    entry = results["experiments"][NAME]
    assert entry["verdict"] in VERDICTS
    assert entry["measured"] and entry["reason"] and entry["thresholds"] and entry["setup"]
    assert "isolates the estimator" in entry["setup"]
    assert len(entry["figures"]) == 2
    for fig in entry["figures"]:
        assert (out / fig).read_bytes()[:4] == b"\x89PNG"
        assert b"<svg" in (out / fig).with_suffix(".svg").read_bytes()[:500]
    rows = (out / NAME / "metrics.csv").read_text().splitlines()
    assert len(rows) > 1 and "estimator" in rows[0]


def test_poisoned_statistics_are_nan_and_skipped_ones_untouched(pipeline):
    m = _metrics(pipeline[1])
    clean, poisoned, skipped = m["clean"], m["poisoned"], m["skipped"]
    assert not np.isfinite(poisoned["injected_loss"])          # the batch really overflowed
    for layer in poisoned["bn"]:
        assert np.isnan(layer["running_mean"]).all() and np.isnan(layer["running_var"]).all()
        assert "num_batches_skipped" not in layer
    # NaN logits: every prediction is the same class, i.e. chance on balanced test data
    assert poisoned["final_eval_acc"] <= 1 / poisoned["n_classes"] + 0.05
    # ... while accuracy before the bad batch was fine and training itself went on
    before = [a for s, a in zip(poisoned["step"], poisoned["eval_acc"], strict=True)
              if s <= poisoned["inject_at"]]
    assert before and max(before) > 0.5
    assert np.isfinite(poisoned["final_train_loss"])
    # skipping = the bad batch never arrived: bit-identical to the run that dropped it
    for s, c in zip(skipped["bn"], clean["bn"], strict=True):
        assert s["finite"] and s["num_batches_skipped"] == 1
        assert s["running_mean"] == c["running_mean"] and s["running_var"] == c["running_var"]
        assert s["num_batches_tracked"] == c["num_batches_tracked"]
    assert skipped["final_eval_acc"] == clean["final_eval_acc"]
    assert skipped["warnings"] and not poisoned["warnings"]


def test_estimator_curves(pipeline, digits):
    m = _metrics(pipeline[1])
    one = 1 / len(digits.y_test)   # one test example
    for key in ("batch-8", "batch-128"):
        r = m[key]
        assert r["grid"] == log2_grid(256) and set(r["acc"]) == {
            "ema", "cumulative", "exact", "ema_debiased"}
        assert all(len(v) == len(r["grid"]) for v in r["acc"].values())
        # after one batch, cumulative, exact and debiased all hold that batch's statistics
        first = [r["acc"][e][0] for e in ("cumulative", "exact", "ema_debiased")]
        assert max(first) - min(first) <= 2 * one
        # the plain EMA after one batch is 90% the initial variance 1: far off the estimate
        assert r["var_error"]["ema"][0] > 2 * r["var_error"]["ema_debiased"][0]
    # with more data per batch the one-batch estimate is better
    assert m["batch-128"]["var_error"]["exact"][0] < m["batch-8"]["var_error"]["exact"][0]


def test_needed_means_stays_within():
    grid = [1, 2, 4, 8]
    assert needed(grid, [0.9, 0.5, 0.9, 0.9], 0.9) == 4
    assert needed(grid, [0.9, 0.9, 0.9, 0.5], 0.9) is None
    assert needed(grid, [0.895, 0.9, 0.9, 0.9], 0.9) == 1


def _synthetic(holds: bool) -> dict:
    """Metrics made up to satisfy (or, mutated, violate) every rule."""
    grid = log2_grid(256)
    slow = [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.95, 0.95]
    fast = [0.95] * len(grid)
    m = {}
    for b in (8, 128):
        m[f"batch-{b}"] = {"estimate_batch": b, "grid": grid, "reference_acc": 0.95,
                           "acc": {"ema": slow, "cumulative": fast, "exact": fast,
                                   "ema_debiased": fast},
                           "var_error": {e: [0.0] * len(grid) for e in
                                         ("ema", "cumulative", "exact", "ema_debiased")}}
    ok = {"running_mean": [0.0], "running_var": [1.0], "finite": True}
    nan = {"running_mean": [float("nan")], "running_var": [float("nan")], "finite": False}
    base = {"step": [10], "eval_acc": [0.9], "final_train_loss": 0.1, "n_classes": 10,
            "inject_at": 5}
    m["clean"] = {**base, "final_eval_acc": 0.95, "bn": [ok] * 3}
    m["poisoned"] = {**base, "final_eval_acc": 0.1, "bn": [nan] * 3}
    m["skipped"] = {**base, "final_eval_acc": 0.95, "bn": [{**ok, "num_batches_skipped": 1}] * 3}
    return m


def _verdict(metrics):
    return verdict(NAME, metrics)


def test_verdict_follows_the_numbers():
    m = _synthetic(True)
    assert _verdict(m) == "holds"
    # plain EMA as fast as the debiased one: (a) fails
    fast_ema = copy.deepcopy(m)
    fast_ema["batch-8"]["acc"]["ema"] = fast_ema["batch-8"]["acc"]["exact"]
    assert _verdict(fast_ema) == "does not hold"
    # debiased only 2x faster than the EMA (needs 32 vs 64): not the "far fewer" (4x) claimed
    half = copy.deepcopy(m)
    half["batch-128"]["acc"]["ema_debiased"] = [0.5] * 5 + [0.95] * 4
    assert _verdict(half) == "does not hold"
    # ... and when seeds disagree (2x at one, 8x at another) the interval straddles the bar
    mixed = copy.deepcopy(m)
    mixed["batch-128"]["acc"]["ema_debiased"] = [0.5] * 3 + [0.95] * 6
    stats = get(NAME).summarize([], {0: half, 1: mixed, 2: half, 3: mixed})
    assert stats.verdict == "inconclusive"
    # a NaN batch that does not poison (statistics stay finite, accuracy fine): (b) fails
    harmless = copy.deepcopy(m)
    harmless["poisoned"] = copy.deepcopy(harmless["clean"])
    assert _verdict(harmless) == "does not hold"
    # skipping that counts twice, or drifts far off the clean run, fails
    twice = copy.deepcopy(m)
    twice["skipped"]["bn"] = [{**twice["skipped"]["bn"][0], "num_batches_skipped": 2}] * 3
    assert _verdict(twice) == "does not hold"
    drift = copy.deepcopy(m)
    drift["skipped"]["final_eval_acc"] = 0.8
    assert _verdict(drift) == "does not hold"


def test_configure_bn_keeps_training_gamma(digits):
    trainer = make_trainer("numpy", mlp_spec([64, 16, 10], "relu", True), "he",
                           np.random.default_rng(0), 0.5)
    configure_bn(trainer, running_stats="exact", skip_nonfinite=True)
    (bn,) = trainer.bn_layers()
    assert bn.running_stats == "exact" and bn.skip_nonfinite
    x, y = digits.flat("train")
    before = bn.weight.data.copy()
    trainer.train_step(x[:32], y[:32])
    assert not np.array_equal(bn.weight.data, before)        # the optimizer still owns gamma
    assert int(bn.num_samples_tracked) == 32


def test_fp16_overflow_makes_inf_only_where_float16_overflows():
    x = np.array([[0.0, 0.5, 0.66, 1.0]], dtype=np.float32)
    out = fp16_overflow(x)
    assert out[0, 0] == 0 and np.isfinite(out[0, 1]) and np.isinf(out[0, 2:]).all()


def _ctx(key, digits, engine):
    return RunContext(NAME, key, digits, engine, 0, "test")


@pytest.mark.parametrize("key", ["batch-128", "poisoned", "skipped"])
def test_torch_engine_matches_numpy(torch, digits, key):
    exp = get(NAME)
    run = next(r for r in exp.runs(digits, 0.002) if r.key == key)
    cfg = {**run.config, "steps": 20}
    if "inject_at" in cfg:
        cfg["inject_at"] = 10
    else:
        cfg["max_batches"] = 8
    one = 1 / len(digits.y_test)
    n = exp.run(_ctx(key, digits, "numpy"), cfg)
    t = exp.run(_ctx(key, digits, "torch"), cfg)
    if "acc" in n:
        for e in n["acc"]:
            np.testing.assert_allclose(t["acc"][e], n["acc"][e], atol=3 * one, err_msg=e)
    else:
        assert t["final_eval_acc"] == pytest.approx(n["final_eval_acc"], abs=3 * one)
        assert [la["finite"] for la in t["bn"]] == [la["finite"] for la in n["bn"]]
        assert ([la.get("num_batches_skipped") for la in t["bn"]]
                == [la.get("num_batches_skipped") for la in n["bn"]])
