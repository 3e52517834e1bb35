"""train-eval, regularization, landscape and rnn-norm through the real pipeline at CI size on
`digits`; verdicts follow the numbers; numpy and torch engines agree where both are supported."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from normlab.experiments import get
from normlab.runner.base import VERDICTS, RunContext
from normlab.runner.holdout import parts
from tests.pipeline import run_ci_pipeline, seed_metrics, verdict

NAMES = ["train-eval", "regularization", "landscape", "rnn-norm"]


pytestmark = pytest.mark.usefixtures("numpy_kernels")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp("expb")
    return out, run_ci_pipeline(NAMES, out, digits)


@pytest.mark.parametrize("name", NAMES)
def test_runs_end_to_end(pipeline, name):
    out, results = pipeline
    entry = results["experiments"][name]
    assert entry["verdict"] in VERDICTS
    assert entry["measured"] and entry["reason"] and entry["thresholds"] and entry["setup"]
    assert entry["figures"]
    for fig in entry["figures"]:
        assert (out / fig).read_bytes()[:4] == b"\x89PNG"
        assert b"<svg" in (out / fig).with_suffix(".svg").read_bytes()[:500]
    rows = (out / name / "metrics.csv").read_text().splitlines()
    assert len(rows) > 1 and rows[0].startswith("seed,")
    assert entry["criteria"] and all(len(c["interval"]["per_seed"]) == 2
                                     for c in entry["criteria"])


def _metrics(results, name):
    return seed_metrics(results, name)


def test_train_eval_measurements(pipeline):
    m = _metrics(pipeline[1], "train-eval")
    a = m["batch-size"]
    # batch 1 in training mode is impossible for BN and is recorded as such
    assert a["train_mode_acc"][0] is None and "1 value per channel" in a["errors"]["1"]
    assert all(0 <= t <= 1 for t in a["train_mode_acc"][1:])
    assert a["eval_batch_dependence"] < 1e-4
    b = m["momentum"]
    assert set(b["acc"]) == {"0.01", "0.1", "0.5", "None"}
    assert all(len(v) == len(b["grid"]) for v in b["acc"].values())
    # momentum=None after the first batch = that batch's statistics, whatever came before
    c = m["shift"]
    assert len(c["recal_acc"]) == len(c["recal_batches"])


def test_train_eval_recalibration_restores_shifted_accuracy(pipeline):
    """A brightness/contrast shift is an affine map of the inputs, which the first BN undoes
    exactly once its statistics are re-estimated on shifted data: the shifted accuracy after
    100 recalibration batches is the clean accuracy up to estimation noise."""
    c = _metrics(pipeline[1], "train-eval")["shift"]
    assert abs(c["recal_acc"][-1] - c["clean_acc"]) <= 0.03
    assert c["stale_acc"] < c["clean_acc"] - 0.05


def test_verdicts_follow_the_numbers(pipeline):
    results = pipeline[1]
    # landscape: swapping the nets swaps the conclusion
    land = _metrics(results, "landscape")
    swapped = {k.replace("plain", "x").replace("bn", "plain").replace("x", "bn"): v
               for k, v in land.items()}
    v, w = verdict("landscape", land), verdict("landscape", swapped)
    assert {v, w} != {"holds"} and (v != "holds" or w == "does not hold")
    # landscape: probes where either net is below the loss floor do not count
    low = copy.deepcopy(land)
    for m in low.values():
        m["loss"] = [0.01] * len(m["loss"])
    assert verdict("landscape", low) == "inconclusive"
    # regularization: dropout that does not help the plain net leaves the claim untestable
    reg = copy.deepcopy(_metrics(results, "regularization"))
    reg["plain"]["test_acc"] = reg["dropout"]["test_acc"]
    assert verdict("regularization", reg) == "inconclusive"
    reg["plain"]["test_acc"] = reg["dropout"]["test_acc"] - 0.05     # dropout helps ...
    reg["bn"]["test_acc"] = reg["dropout"]["test_acc"]                # ... BN does as well
    reg["bn+dropout"]["test_acc"] = reg["bn"]["test_acc"]             # ... dropout adds nothing
    assert verdict("regularization", reg) == "holds"
    reg["bn"]["test_acc"] = reg["dropout"]["test_acc"] - 0.03         # BN falls short of it
    assert verdict("regularization", reg) == "does not hold"
    # train-eval: noise that costs nothing leaves part (d) untestable: not "holds"
    te = copy.deepcopy(_metrics(results, "train-eval"))
    te["noise"]["noisy_acc"] = te["noise"]["clean_acc"]
    assert verdict("train-eval", te) == "inconclusive"
    # rnn-norm: a plain LSTM as fast as the normalized ones does not support the claim
    rnn = copy.deepcopy(_metrics(results, "rnn-norm"))
    for k in ("layer", "recurrent_batch", "sequence_batch"):
        rnn[k] = copy.deepcopy(rnn["none"])
    assert verdict("rnn-norm", rnn) == "does not hold"
    # ... and one that is 2x slower than both does
    slow = copy.deepcopy(rnn)
    n = len(slow["none"]["val_acc"])
    slow["none"]["val_acc"] = list(np.linspace(0.1, 0.9, n))
    for k in ("layer", "recurrent_batch", "sequence_batch"):
        slow[k]["val_acc"] = [0.1] + [0.9] * (n - 1)
    for k in slow:
        slow[k]["final_acc"] = 0.9
    assert verdict("rnn-norm", slow) == "holds"


def _ctx(name, key, digits, engine, warn=None):
    return RunContext(name, key, digits, engine, 0, "test", warn=warn)


def test_landscape_probe_leaves_model_unchanged(digits):
    from normlab.engines import make_trainer
    from normlab.engines.spec import mlp_spec
    from normlab.experiments.landscape import probe

    trainer = make_trainer("numpy", mlp_spec([64, 32, 32, 10], "relu", True), "he",
                           np.random.default_rng(0), 0.1)
    x, y = parts(digits).train.flat()
    before = trainer.state()
    p = probe(trainer, x[:60], y[:60], [0.05, 0.4])
    after = trainer.state()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert len(p["losses"]) == 2 and p["variation"] == pytest.approx(np.ptp(p["losses"]))
    # at eta -> 0 the gradient cannot change: the change grows with the step
    small = probe(trainer, x[:60], y[:60], [1e-4])
    assert small["grad_change"] < p["grad_change"]


@pytest.mark.parametrize("key", ["layer", "recurrent_batch"])
def test_rnn_norm_runs_its_torch_twin(torch, digits, key):
    """--engine torch trains the torch twin (tests/engines/test_lstm_twin.py: lockstep), no note."""
    exp = get("rnn-norm")
    run = next(r for r in exp.runs(digits, 0.002) if r.key == key)
    cfg = {**run.config, "steps": 6, "eval_every": 3}
    notes = []
    t = exp.run(_ctx("rnn-norm", key, digits, "torch", notes.append), cfg)
    n = exp.run(_ctx("rnn-norm", key, digits, "numpy"), cfg)
    assert not notes and (t.pop("engine"), n.pop("engine")) == ("torch", "numpy")
    assert t["step"] == n["step"]
    np.testing.assert_allclose(t["train_loss"], n["train_loss"], rtol=1e-4)
    for k in ("val_acc", "final_acc", "test_acc"):   # 143 / 359 digits: no near-tie flips here
        np.testing.assert_allclose(t[k], n[k], err_msg=k)


@pytest.mark.parametrize("name,key", [("landscape", "lr0.1-bn"), ("regularization", "bn"),
                                      ("train-eval", "shift")])
def test_torch_engine_matches_numpy(torch, digits, name, key):
    exp = get(name)
    run = next(r for r in exp.runs(digits, 0.002) if r.key == key)
    cfg = dict(run.config)
    for k, v in (("steps", 12), ("epochs", 3), ("check_every", 4)):
        if k in cfg:
            cfg[k] = v
    n = exp.run(_ctx(name, key, digits, "numpy"), cfg)
    t = exp.run(_ctx(name, key, digits, "torch"), cfg)
    assert n.keys() == t.keys()
    if name == "landscape":
        # A 10-layer net's float32 logits agree to ~1e-3 (the probes below check the losses
        # and gradients); its accuracy on 143 validation digits can flip a near-tie, so it is
        # not compared here.
        n.pop("val_acc"), t.pop("val_acc")
    for k, v in n.items():
        if isinstance(v, list) and v and isinstance(v[0], float):
            np.testing.assert_allclose(t[k], v, rtol=2e-3, atol=2e-3, err_msg=k)
        elif isinstance(v, float):
            assert t[k] == pytest.approx(v, rel=2e-3, abs=2e-3), k


def test_rnn_norm_uses_cooijmans_clipping_and_noisy_h0_for_recurrent_bn(digits):
    from normlab.experiments.rnn_norm import CLIP

    cfg = {r.key: r.config for r in get("rnn-norm").runs(digits, 0.002)}
    assert CLIP == 1.0 and all(c["clip"] == 1.0 for c in cfg.values())
    assert cfg["recurrent_batch"]["h0_noise"] == 0.1
    assert all(cfg[k]["h0_noise"] == 0.0 for k in ("none", "layer", "sequence_batch"))


def test_noisy_h0_removes_zero_variance_steps_of_blank_rows():
    # MNIST's top rows are blank: with h_0 = 0 every sample has the same h_t there, W_h h_t has
    # zero batch variance and per-step BN divides by sqrt(eps) (the exploding gradient that kept
    # the BN-LSTM at chance on 28x28 rows); Cooijmans et al.'s noisy h_0 gives it variance.
    from normlab.nn.recurrent import LSTM
    from normlab.runner.rnn_train import initial_state

    x = np.random.default_rng(0).random((16, 6, 8)).astype(np.float32)
    x[:, :3] = 0.0
    var = {}
    for noise in (0.0, 0.1):
        lstm = LSTM(8, 12, norm="recurrent_batch", momentum=1.0, rng=0)
        lstm(x, initial_state(noise, 16, 12, np.random.default_rng(1)))
        var[noise] = lstm.norm_hh.running_var.max(axis=1)   # unbiased batch var per step
    # norm_hh at step t sees h_{t-1}: steps 0..3 (h_0 and three blank rows) are constant
    assert np.all(var[0.0][:4] < 1e-20) and np.all(var[0.0][4:] > 1e-4)
    assert np.all(var[0.1] > 1e-4)


def test_clip_grad_norm_scales_to_max_norm_only_when_above():
    from normlab.nn.module import Parameter
    from normlab.runner.rnn_train import clip_grad_norm

    params = [Parameter(np.zeros(2)), Parameter(np.zeros(1))]
    params[0].grad, params[1].grad = np.array([3.0, 0.0]), np.array([4.0])
    assert clip_grad_norm(params, 1.0) == pytest.approx(5.0)
    np.testing.assert_allclose(np.concatenate([p.grad for p in params]), [0.6, 0.0, 0.8])
    assert clip_grad_norm(params, 2.0) == pytest.approx(1.0)
    np.testing.assert_allclose(np.concatenate([p.grad for p in params]), [0.6, 0.0, 0.8])
