"""The experiments of issue 25 (invariances, bias, affine, ...): end to end through the real
pipeline at CI size on `digits`, verdicts computed from doctored numbers, and their pieces."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from normlab.experiments import get
from normlab.runner.base import RunContext
from tests.pipeline import run_ci_pipeline, seed_metrics, verdict

NAMES = ["invariances", "bias", "affine", "placement", "depth", "dropout-bn", "cost"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp("expC") / "out"
    return out, run_ci_pipeline(NAMES, out, digits, seeds=2)


@pytest.mark.parametrize("name", NAMES)
def test_runs_end_to_end_with_verdict_and_figures(pipeline, name):
    out, res = pipeline
    e = res["experiments"][name]
    assert e["verdict"] in ("holds", "does not hold", "inconclusive", "demonstrated")
    assert e["measured"] and e["reason"] and e["thresholds"] and e["setup"]
    for fig in e["figures"]:
        assert (out / fig).read_bytes()[:4] == b"\x89PNG"
    assert e["published"] and get(name).pilot_seeds
    assert all(s < 1000 for s in e["seeds"])          # CI seeds, never the confirmatory block


def test_invariance_table_matches_the_sources(pipeline):
    e = pipeline[1]["experiments"]["invariances"]
    assert e["verdict"] == "demonstrated"                # demonstrations never make it "hold"
    assert {c["role"] for c in e["criteria"]} == {"demonstration"}
    change = seed_metrics(pipeline[1], "invariances")["table"]["change"]
    # Ba et al. Table 1, three rows, measured
    assert change["bn"]["w_scale"] < 1e-3 and change["bn"]["w_center"] > 1e-2
    assert change["layer"]["w_center"] < 1e-3 and change["layer"]["x_center"] > 1e-2
    assert change["weight"]["x_scale"] > 1e-2 and change["weight"]["w_vector"] < 1e-3
    # only the batch's normalisers see the other samples
    assert change["bn"]["others"] > 1e-2 and change["group"]["others"] < 1e-3


def test_invariance_verdict_fails_on_one_wrong_cell(pipeline):
    m = copy.deepcopy(seed_metrics(pipeline[1], "invariances"))
    assert verdict("invariances", m) == "demonstrated"
    m["table"]["change"]["layer"]["w_center"] = 0.5      # LN "not invariant" to re-centering
    assert verdict("invariances", m) == "does not hold"
    m["table"]["change"]["layer"]["w_center"] = 5e-3     # ambiguous: disagrees with both
    assert verdict("invariances", m) == "does not hold"


def test_invariance_shared_statistics_are_wu_and_he_fig2(digits):
    e = get("invariances")
    m = e.run(RunContext("invariances", "table", digits, "numpy", 5, "t"), {"n": 8})
    shared = {f: np.asarray(v) for f, v in m["shared"].items()}
    assert (shared["bn2d"][:, 0] == 1).all() and not shared["bn2d"][:, 1:].any()   # (N, H, W)
    assert (shared["layer2d"][0] == 1).all() and not shared["layer2d"][1:].any()   # (C, H, W)
    assert shared["instance"][0, 0] == 1 and shared["instance"].sum() == 1         # (H, W)
    assert (shared["group"][0, :3] == 1).all() and shared["group"].sum() == 3      # 3 channels
    assert shared["activation"][:, 0] == pytest.approx(1 / 49)                      # (N) only
    assert (shared["ghost"][:4, 0] == 1).all() and shared["ghost"].sum() == 4        # 4 samples


def test_bias_is_demonstrated_and_fails_without_the_cancellation(pipeline):
    m = copy.deepcopy(seed_metrics(pipeline[1], "bias"))
    assert max(m["pair"]["grad_ratio"]) < 1e-3 and m["pair"]["absorbed"] < 1e-3
    # at CI size (40 steps) the eval-mode nets may still differ by a test image: (b) is
    # judged on the numbers; made equal, every part is shown
    m["pair"]["test_acc_nobias"] = m["pair"]["test_acc_bias"]
    assert verdict("bias", m) == "demonstrated"
    assert m["pair"]["n_saved"] == 300                   # three hidden layers of 100
    m["pair"]["grad_ratio"][-1] = 0.2                    # a bias that BN did not cancel
    assert verdict("bias", m) == "does not hold"


def test_hidden_bias_slots():
    from normlab.experiments.bias import hidden_bias_slots

    # W1 b1 g1 be1 | W2 b2 g2 be2 | W3 b3: the hidden Linears' biases
    assert hidden_bias_slots([(3, 4), (3,), (3,), (3,), (3, 3), (3,), (3,), (3,), (2, 3),
                              (2,)]) == [1, 5]
    assert hidden_bias_slots([(3, 4), (3,), (2, 3), (2,)]) == [1]


def test_bias_twin_matches_on_torch(digits, torch):
    """The torch engine runs the same pair: same verdict, same saved parameters."""
    e = get("bias")
    run = e.runs(digits, 0.02, "quick")[0]
    out = {}
    for engine in ("numpy", "torch"):
        m = e.run(RunContext("bias", run.key, digits, engine, 3, "t"), run.config)
        out[engine] = m
        assert max(m["grad_ratio"]) < 1e-3 and m["absorbed"] < 1e-3
    assert out["numpy"]["n_saved"] == out["torch"]["n_saved"]
    assert abs(out["numpy"]["test_acc_bias"] - out["torch"]["test_acc_bias"]) <= 0.05


def test_affine_forced_is_not_the_claim(digits, tmp_path):
    """The mechanism removed the other way: both arms hold gamma = 1, beta = 0."""
    from normlab.experiments import affine

    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(affine, "learnable", lambda cfg: False)
        res = run_ci_pipeline(["affine"], tmp_path, digits, seeds=2)
    finally:
        mp.undo()
    e = res["experiments"]["affine"]
    # (b) is exactly 0 on both seeds: the sign test over 2 seeds cannot call it either way
    assert e["verdict"] in ("does not hold", "inconclusive"), e["reason"]
    assert e["intervals"][affine.LEFT]["per_seed"] == [0.0, 0.0]


def test_affine_verdict_follows_the_numbers(pipeline):
    m = copy.deepcopy(seed_metrics(pipeline[1], "affine"))
    n = len(m["fixed"]["within1"])
    m["fixed"]["within1"] = [0.65] * n
    m["affine"]["within1"] = [0.45] * n
    m["affine"]["test_acc"] = m["fixed"]["test_acc"]
    assert verdict("affine", m) == "holds"
    m["affine"]["within1"] = [0.64] * n                 # gamma/beta learned but not used
    assert verdict("affine", m) == "does not hold"


def test_affine_slots_and_normal_shares():
    from normlab.experiments.affine import NORMAL_SHARES, affine_slots

    assert affine_slots([(3, 4), (3,), (3,), (3,), (2, 3), (2,)]) == [2, 3]
    assert affine_slots([(3, 4), (3,), (2, 3), (2,)]) == []
    assert [round(100 * NORMAL_SHARES[k], 1) for k in (1, 2, 3)] == [68.3, 95.4, 99.7]


def test_placement_specs_and_verdict(pipeline):
    from normlab.experiments.placement import placement_spec

    before = placement_spec([4, 3, 3, 2], "relu", "before")
    after = placement_spec([4, 3, 3, 2], "relu", "after")
    assert [k[0] for k in before] == ["linear", "bn1d", "relu"] * 2 + ["linear"]
    assert [k[0] for k in after] == ["linear", "relu", "bn1d"] * 2 + ["linear"]
    assert "bn1d" not in [k[0] for k in placement_spec([4, 3, 2], "sigmoid", "none")]
    with pytest.raises(ValueError, match="order"):
        placement_spec([4, 3, 2], "relu", "between")
    m = copy.deepcopy(seed_metrics(pipeline[1], "placement"))
    for act in ("relu", "sigmoid"):
        m[f"{act}-after"]["test_acc"] = m[f"{act}-before"]["test_acc"] = 0.9
    m["sigmoid-none"]["test_acc"] = 0.5
    assert verdict("placement", m) == "holds"           # equal orders, BN matters
    m["sigmoid-after"]["test_acc"] = 0.95                # after 5 points better
    assert verdict("placement", m) == "does not hold"
    m["sigmoid-none"]["test_acc"] = 0.9                  # BN does nothing here: untestable
    assert verdict("placement", m) == "inconclusive"


def test_depth_verdict_reads_the_slope(pipeline):
    from normlab.experiments.depth import DEPTHS

    m = copy.deepcopy(seed_metrics(pipeline[1], "depth"))
    n = len(m["d20-plain"]["train_loss"])
    for i, d in enumerate(DEPTHS):          # BN 0.9 everywhere; plain falls with depth
        m[f"d{d:02d}-bn"]["test_acc"] = 0.9
        m[f"d{d:02d}-plain"]["test_acc"] = 0.88 - 0.25 * i
    m["d20-plain"]["train_loss"] = [2.3] * n
    assert verdict("depth", m) == "holds"
    for d in DEPTHS:                         # the same gap at every depth: no slope
        m[f"d{d:02d}-plain"]["test_acc"] = 0.7
    assert verdict("depth", m) == "does not hold"


def test_dropout_bn_shift_and_recalibration(digits):
    """The shift ratio is about 1 - p right after a dropout -> Linear; recalibration sets the
    shifted BN's statistics to what it sees with dropout off, so its ratio becomes 1."""
    from normlab.engines import make_trainer
    from normlab.experiments.dropout_bn import SHIFTED, dropout_spec, recalibrate_from_eval
    from normlab.runner.holdout import parts
    from normlab.runner.train import evaluate

    spec = dropout_spec([64, 32, 32, 10], "before", 0.5)
    assert spec[SHIFTED][0] == "bn1d" and spec[SHIFTED - 2][0] == "dropout"
    assert [k[0] for k in dropout_spec([64, 32, 32, 10], "after", 0.5)][-2] == "dropout"
    with pytest.raises(ValueError, match="where"):
        dropout_spec([64, 32, 32, 10], "inside", 0.5)
    t = make_trainer("numpy", spec, "he", np.random.default_rng(0), 0.1)
    x, y = parts(digits).train.flat()
    for s in range(0, 600, 60):
        t.train_step(x[s:s + 60], y[s:s + 60])

    def ratio():
        seen = evaluate(t, x, y, SHIFTED)[1].astype(np.float64)
        return float(np.median(seen.var(axis=0) / t.bn_buffers()[1]["running_var"]))

    assert ratio() < 0.8
    weights = [a.copy() for a in t.parameter_arrays()]
    recalibrate_from_eval(t, x, SHIFTED)
    assert ratio() == pytest.approx(1.0, abs=0.01)
    assert all(np.array_equal(a, b) for a, b in zip(weights, t.parameter_arrays(), strict=True))


def test_dropout_bn_verdict(pipeline):
    m = copy.deepcopy(seed_metrics(pipeline[1], "dropout-bn"))
    m["before-p0.5"].update(shift_ratio=0.5, test_acc=0.90, recal_acc=0.92)
    m["after-p0.5"]["test_acc"] = 0.93
    assert verdict("dropout-bn", m) == "holds"
    m["before-p0.5"]["shift_ratio"] = 1.0                # no variance shift
    assert verdict("dropout-bn", m) == "does not hold"


@pytest.mark.parametrize("name", ["affine", "placement", "depth", "dropout-bn"])
def test_torch_twin_runs_the_same_runs(name, digits, torch):
    """Each run trains on the torch engine from the same initial weights as on NumPy: the same
    metrics, and at CI size (a few dozen steps) nearly the same curve."""
    e = get(name)
    run = e.runs(digits, 0.02, "quick")[-1]
    out = {engine: e.run(RunContext(name, run.key, digits, engine, 7, "t"), run.config)
           for engine in ("numpy", "torch")}
    assert set(out["numpy"]) == set(out["torch"])
    assert out["numpy"]["val_acc"][0] == pytest.approx(out["torch"]["val_acc"][0], abs=0.02)
    assert abs(out["numpy"]["test_acc"] - out["torch"]["test_acc"]) <= 0.1


def test_cost_verdict_and_measurements(pipeline):
    m = copy.deepcopy(seed_metrics(pipeline[1], "cost"))
    inf = m["infer"]
    assert inf["fold_max_abs_error"] < 1e-4 and inf["bn_layers"] == 3
    assert inf["kept_per_layer"] >= inf["activation_bytes"]     # x_hat, batch x features
    n = len(inf["eval_ms"]["plain"])
    m["train"]["step_ms"] = {"True": [1.2] * n, "False": [1.0] * n}
    inf["eval_ms"] = {"bn": [1.3] * n, "folded": [1.01] * n, "plain": [1.0] * n}
    assert m["sync"]["sync_unavailable"].startswith("not timed at quick size")
    k = 5            # full size times it (tests/experiments/test_cost_sync.py)
    m["sync"]["sync_step_ms"] = {"True": [3.0] * k, "False": [2.0] * k}
    assert verdict("cost", m) == "holds"
    m["sync"]["sync_step_ms"]["True"] = [2.0] * k                 # SyncBN cost nothing
    assert verdict("cost", m) == "does not hold"
    m["sync"]["sync_step_ms"]["True"] = [3.0] * k
    inf["eval_ms"]["folded"] = [1.3] * n                          # folding saved nothing
    assert verdict("cost", m) == "does not hold"
