"""learning-rate, batch-size and conv-bn: end-to-end through the real pipeline at CI size on
`digits`, verdicts computed from the numbers, numpy-vs-torch engine parity, the CNN's norm
registry on both engines."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from normlab import nn
from normlab.engines.numpy import build_numpy
from normlab.engines.numpy_layers import ActivationBatchNorm, get_norm
from normlab.engines.spec import NORMS
from normlab.experiments import get
from normlab.runner.base import Run, RunContext
from normlab.runner.cnn import cnn_spec
from normlab.runner.holdout import parts
from tests.pipeline import seed_metrics, verdict

NAMES = ["learning-rate", "batch-size", "conv-bn"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """The three experiments run as a user runs them (CLI subprocess) at CI size on digits.

    One BLAS thread: on a loaded 2-core machine OpenBLAS's spinning threads make these small
    matrix products ~10x slower (measured), and CI runs several test processes at once.
    """
    out = tmp_path_factory.mktemp("expA") / "out"
    env = {**os.environ, "NORMLAB_KERNELS": "numpy", "NORMLAB_CI_SCALE": "0.02",
           "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "normlab.cli", "reproduce", *NAMES, "--quick",
                           "--data", "digits", "--out", str(out), "--seeds", "2"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out, json.loads((out / "results.json").read_text())


@pytest.mark.parametrize("name", NAMES)
def test_runs_end_to_end_with_verdict_and_figures(pipeline, name):
    out, res = pipeline
    e = res["experiments"][name]
    assert e["verdict"] in ("holds", "does not hold", "inconclusive")
    assert e["measured"] and e["reason"] and e["thresholds"] and e["setup"]
    assert e["figures"]
    for fig in e["figures"]:
        assert (out / fig).read_bytes()[:4] == b"\x89PNG"
    assert e["seeds"] == [1000, 1001] and e["published"]   # the confirmatory block
    for c in e["criteria"]:   # every verdict reads a statistic with an interval over 2 seeds
        iv = e["intervals"][c["statistic"]]
        allowed = (("holds", "does not hold", "inconclusive") if c["role"] == "evidence"
                   else ("shown", "not shown"))
        assert len(iv["per_seed"]) == 2 and c["verdict"] in allowed
        assert iv["ci95"][0] <= iv["mean"] <= iv["ci95"][1] or iv["mean"] is None
    rows = (out / name / "metrics.csv").read_text().splitlines()
    assert len(rows) > 1 and rows[0].startswith("seed,")
    for run in e["runs"].values():
        for m in run["metrics"].values():
            assert all(0 <= a <= 1 for a in m.get("val_acc", []))
            assert 0 <= m.get("test_acc", 0) <= 1


def test_batch_size_design(pipeline):
    """One optimizer batch for every run; BN and Renorm statistics over groups of it; the
    per-image norms trained once; everything on the same cosine-decayed schedule."""
    runs = pipeline[1]["experiments"]["batch-size"]["runs"]
    assert {r["config"]["batch"] for r in runs.values()} == {32}
    assert len({r["config"]["steps"] for r in runs.values()}) == 1
    assert {k for k in runs if "-g" not in k} == {"group", "layer", "instance", "none"}
    assert [runs[f"batch-g{g}"]["config"]["group"] for g in (2, 4, 8, 16, 32)] == \
        [2, 4, 8, 16, None]
    renorm = runs["renorm-g2"]["config"]["schedule"]
    assert renorm[0] == 3.0 and renorm[1] == 5.0 and renorm[2] < renorm[4] < renorm[3]


def _bs_metrics(err: dict) -> dict:
    """Metrics of every batch-size run from test errors: {method: {group: error}}."""
    out = {}
    for m, by in err.items():
        for g, e in by.items():
            out[f"{m}-g{g}" if m in ("batch", "renorm") else m] = {"test_acc": 1 - e,
                                                                    "val_acc": [1 - e]}
    return out


def test_batch_size_verdict_follows_the_numbers():
    groups = (2, 4, 8, 16, 32)
    flat = {32: 0.05}
    degrading = {g: 0.05 + 0.1 / g for g in groups}   # +4.7 points from 32 to 2
    paper_like = {"batch": degrading, "group": flat, "layer": flat, "instance": flat,
                  "renorm": {g: 0.05 + 0.02 / g for g in groups}, "none": flat}
    assert verdict("batch-size", _bs_metrics(paper_like)) == "holds"
    bn_flat = {**paper_like, "batch": {g: 0.05 for g in groups}}
    assert verdict("batch-size", _bs_metrics(bn_flat)) == "does not hold"
    no_recovery = {**paper_like, "renorm": {g: v + 0.01 for g, v in degrading.items()}}
    assert verdict("batch-size", _bs_metrics(no_recovery)) == "does not hold"
    gn_as_bad = {**paper_like, "group": {32: degrading[2]}}
    assert verdict("batch-size", _bs_metrics(gn_as_bad)) == "does not hold"


def test_learning_rate_verdict_follows_the_numbers(pipeline):
    res = pipeline[1]["experiments"]["learning-rate"]
    runs = [Run(k, r["config"]) for k, r in res["runs"].items()]
    steps = runs[0].config["evals"]

    def curve(run, good):
        lr_rank = sorted({r.config["lr"] for r in runs if r.config["model"] ==
                          run.config["model"]}).index(run.config["lr"])
        if run.config["bn"] and good:        # BN: fast at every rate
            acc = [0.95] * len(steps)
        elif lr_rank in (0, 1):              # plain: slow, and only at the two lowest rates
            acc = list(np.linspace(0.2, 0.9, len(steps)))
        else:
            acc = [0.1] * len(steps)
        return {"step": steps, "val_acc": acc, "test_acc": acc[-1], "diverged_at": None}

    assert verdict("learning-rate", {r.key: curve(r, True) for r in runs}, runs) == "holds"
    assert verdict("learning-rate", {r.key: curve(r, False) for r in runs}, runs) == \
        "does not hold"


def test_conv_bn_verdict_follows_the_numbers(pipeline):
    metrics = seed_metrics(pipeline[1], "conv-bn")
    steps = metrics["channel"]["step"]
    slow = list(np.linspace(0.1, 0.9, len(steps)))
    fast = [0.1] + [0.92] * (len(steps) - 1)
    metrics["none"].update(val_acc=slow, test_acc=0.9)
    metrics["channel"].update(val_acc=fast, test_acc=0.95)
    metrics["activation"].update(val_acc=fast, test_acc=0.95)
    assert verdict("conv-bn", metrics) == "holds"
    metrics["activation"]["test_acc"] = 0.97          # per-activation 2 points better
    assert verdict("conv-bn", metrics) == "does not hold"
    metrics["activation"]["test_acc"] = 0.95
    metrics["channel"]["val_acc"] = slow              # BN that does nothing
    assert verdict("conv-bn", metrics) == "does not hold"
    assert metrics["activation"]["bn_params"] == 2 * (16 * 8 * 8 + 32 * 4 * 4)
    assert metrics["channel"]["bn_params"] == 2 * (16 + 32)


@pytest.mark.parametrize("name,key", [("learning-rate", "cnn-lr0.3-bn"),
                                      ("learning-rate", "mlp-lr1-bn"),
                                      ("batch-size", "renorm-g4"),
                                      ("batch-size", "batch-g4"),
                                      ("batch-size", "group"),
                                      ("batch-size", "instance"),
                                      ("conv-bn", "activation")])
def test_torch_engine_matches_numpy_engine(torch, digits, name, key):
    exp = get(name)
    run = next(r for r in exp.runs(digits, 0.002) if r.key == key)
    cfg = {**run.config, "steps": 12, "evals": [0, 4, 8, 12]}
    if cfg.get("schedule"):   # the renorm ramp inside these 12 steps
        cfg["schedule"] = [3.0, 5.0, 2, 8, 5]
    got = {engine: exp.run(RunContext(name, key, digits, engine, 0, "h"), cfg)
           for engine in ("numpy", "torch")}
    np.testing.assert_allclose(got["torch"]["train_loss"][1:], got["numpy"]["train_loss"][1:],
                               rtol=2e-4, atol=1e-5)
    one_val, one_test = 1 / len(parts(digits).val) + 1e-12, 1 / len(digits.y_test) + 1e-12
    assert np.abs(np.subtract(got["torch"]["val_acc"], got["numpy"]["val_acc"])).max() \
        <= one_val
    assert abs(got["torch"]["test_acc"] - got["numpy"]["test_acc"]) <= one_test


@pytest.mark.parametrize("key", ["dropout", "bn+dropout"])
def test_torch_engine_dropout_is_seeded_and_matches_numpy(torch, digits, key):
    """The torch twin draws its dropout masks from the NumPy twin's generator: a torch-engine
    run with dropout is fixed by its seed (torch.nn.Dropout's global generator made two runs of
    one seed differ) and equals the NumPy engine's run."""
    exp = get("regularization")
    run = next(r for r in exp.runs(digits, 0.002) if r.key == key)
    cfg = {**run.config, "epochs": 2, "n_train": 120}
    torch.manual_seed(1)
    first = exp.run(RunContext("regularization", key, digits, "torch", 0, "h"), cfg)
    torch.manual_seed(2)    # torch's global generator must not matter
    again = exp.run(RunContext("regularization", key, digits, "torch", 0, "h"), cfg)
    assert first == again
    numpy_run = exp.run(RunContext("regularization", key, digits, "numpy", 0, "h"), cfg)
    np.testing.assert_allclose(first["train_loss"], numpy_run["train_loss"], rtol=2e-4,
                               atol=1e-5)
    assert abs(first["test_acc"] - numpy_run["test_acc"]) <= 1 / len(digits.y_test) + 1e-12


def test_torch_twin_refuses_dropout_without_the_numpy_generators(torch):
    from normlab.engines.torch import build_torch
    from normlab.experiments.regularization import regularized_spec

    spec = regularized_spec([64, 8, 10], bn=False, dropout=True)
    model = build_numpy(spec, 0.1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="dropout_rngs: expected one NumPy generator"):
        build_torch(spec, model.state_dict())


@pytest.mark.parametrize("norm,virtual", [(n, None) for n in NORMS]
                         + [("batch", 2), ("renorm", 2)])
def test_cnn_norms_build_identically_on_both_engines(torch, norm, virtual):
    hidden = None if norm == "activation" else 6
    spec = cnn_spec((8, 8), 10, norm, schedule=(3.0, 5.0, 1, 4, 2), hidden=hidden,
                    virtual=virtual)
    from normlab.engines.torch import build_torch

    model = build_numpy(spec, 0.01, np.random.default_rng(0))
    twin = build_torch(spec, model.state_dict())
    assert list(twin.state_dict()) == list(model.state_dict())
    x = np.random.default_rng(1).normal(size=(4, 1, 8, 8)).astype(np.float32)
    for _ in range(2):   # training steps move running statistics and renorm's schedule
        model.train()
        twin.train()
        np.testing.assert_allclose(twin(torch.from_numpy(x)).detach().numpy(), model(x),
                                   rtol=1e-4, atol=1e-5)
    model.eval()
    twin.eval()
    with torch.no_grad():
        np.testing.assert_allclose(twin(torch.from_numpy(x)).numpy(), model(x), rtol=1e-4,
                                   atol=1e-5)


def test_get_norm_rejects_unknown_family():
    with pytest.raises(ValueError, match="norm"):
        get_norm("weight", 4)
    with pytest.raises(ValueError, match="norm"):
        cnn_spec((8, 8), 10, "batchnorm")


def test_activation_bn_is_batchnorm1d_on_flattened_features():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 2, 3, 3))
    m = ActivationBatchNorm(2, 3, 3, dtype=np.float64)
    ref = nn.BatchNorm1d(18, dtype=np.float64)
    np.testing.assert_allclose(m(x), ref(x.reshape(5, -1)).reshape(x.shape), rtol=1e-12)
    g = rng.normal(size=x.shape)
    np.testing.assert_allclose(m.backward(g), ref.backward(g.reshape(5, -1)).reshape(x.shape),
                               rtol=1e-12)
    np.testing.assert_allclose(m.running_var, ref.running_var, rtol=1e-12)
