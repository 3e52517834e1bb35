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

from normlab import data, nn
from normlab.experiments import get
from normlab.experiments.base import Run, RunContext
from normlab.experiments.cnn import NORMS, ActivationBatchNorm, cnn_spec, get_norm
from normlab.experiments.models import build_numpy, build_torch

NAMES = ["learning-rate", "batch-size", "conv-bn"]


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


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
                           "--data", "digits", "--out", str(out)], capture_output=True,
                          text=True, env=env, timeout=300)
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
    rows = (out / name / "metrics.csv").read_text().splitlines()
    assert len(rows) > 1
    for run in e["runs"].values():
        for a in run["metrics"].get("test_acc", []):
            assert 0 <= a <= 1


def test_batch_size_runs_see_equal_samples(pipeline):
    runs = pipeline[1]["experiments"]["batch-size"]["runs"]
    seen = {r["config"]["batch"] * r["config"]["steps"] for r in runs.values()}
    assert len(seen) == 1
    lr = {r["config"]["batch"]: r["config"]["lr"] for r in runs.values()}
    assert lr[64] == pytest.approx(32 * lr[2])   # linear scaling
    renorm = runs["renorm-b2"]["config"]["schedule"]
    assert renorm[0] == 3.0 and renorm[1] == 5.0 and renorm[2] < renorm[4] < renorm[3]


def _bs_metrics(err: dict) -> dict:
    return {f"{m}-b{b}": {"test_acc": [0.1, 1 - e]} for m, by in err.items()
            for b, e in by.items()}


def test_batch_size_verdict_follows_the_numbers():
    exp = get("batch-size")
    batches = (2, 4, 8, 16, 32, 64)
    flat = {b: 0.05 for b in batches}
    degrading = {b: 0.05 + 0.1 / b for b in batches}   # +4.7 points from 32 to 2
    paper_like = {"batch": degrading, "group": flat, "layer": flat, "instance": flat,
                  "renorm": {b: 0.05 + 0.02 / b for b in batches}, "none": flat}
    assert exp.summarize([], _bs_metrics(paper_like)).verdict == "holds"
    bn_flat = {**paper_like, "batch": flat}
    assert exp.summarize([], _bs_metrics(bn_flat)).verdict == "does not hold"
    no_recovery = {**paper_like, "renorm": {b: v + 0.01 for b, v in degrading.items()}}
    assert exp.summarize([], _bs_metrics(no_recovery)).verdict == "does not hold"


def test_learning_rate_verdict_follows_the_numbers(pipeline):
    exp = get("learning-rate")
    res = pipeline[1]["experiments"]["learning-rate"]
    runs = [Run(k, r["config"]) for k, r in res["runs"].items()]
    steps = runs[0].config["evals"]

    def curve(run, good):
        lr_rank = sorted({r.config["lr"] for r in runs if r.config["model"] ==
                          run.config["model"]}).index(run.config["lr"])
        if run.config["bn"] and good:        # BN: fast at every rate
            acc = [0.95] * len(steps)
        elif lr_rank in (1, 2):              # plain: slow, and only at two rates
            acc = list(np.linspace(0.2, 0.9, len(steps)))
        else:
            acc = [0.1] * len(steps)
        return {"step": steps, "test_acc": acc, "diverged_at": None}

    assert exp.summarize(runs, {r.key: curve(r, True) for r in runs}).verdict == "holds"
    assert exp.summarize(runs, {r.key: curve(r, False) for r in runs}).verdict == \
        "does not hold"


def test_conv_bn_verdict_follows_the_numbers(pipeline):
    exp = get("conv-bn")
    metrics = {k: dict(r["metrics"]) for k, r in
               pipeline[1]["experiments"]["conv-bn"]["runs"].items()}
    n = len(metrics["channel"]["test_acc"])
    metrics["channel"]["test_acc"] = [0.9] * n
    metrics["activation"]["test_acc"] = [0.9] * n
    assert exp.summarize([], metrics).verdict == "holds"
    metrics["activation"]["test_acc"] = [0.95] * n
    assert exp.summarize([], metrics).verdict == "does not hold"
    assert metrics["activation"]["bn_params"] == 2 * (16 * 8 * 8 + 32 * 4 * 4)
    assert metrics["channel"]["bn_params"] == 2 * (16 + 32)


@pytest.mark.parametrize("name,key", [("learning-rate", "cnn-lr0.3-bn"),
                                      ("learning-rate", "mlp-lr1-bn"),
                                      ("batch-size", "renorm-b4"),
                                      ("batch-size", "group-b8"),
                                      ("batch-size", "instance-b4"),
                                      ("conv-bn", "activation")])
def test_torch_engine_matches_numpy_engine(torch, digits, name, key):
    exp = get(name)
    run = next(r for r in exp.runs(digits, 0.002) if r.key == key)
    cfg = {**run.config, "steps": 12, "evals": [4, 8, 12]}
    if cfg.get("schedule"):   # the renorm ramp inside these 12 steps
        cfg["schedule"] = [3.0, 5.0, 2, 8, 5]
    got = {engine: exp.run(RunContext(name, key, digits, engine, 0, "h"), cfg)
           for engine in ("numpy", "torch")}
    np.testing.assert_allclose(got["torch"]["train_loss"], got["numpy"]["train_loss"],
                               rtol=2e-4, atol=1e-5)
    assert np.abs(np.subtract(got["torch"]["test_acc"], got["numpy"]["test_acc"])).max() \
        <= 1 / len(digits.y_test) + 1e-12


@pytest.mark.parametrize("norm", NORMS)
def test_cnn_norms_build_identically_on_both_engines(torch, norm):
    spec = cnn_spec((8, 8), 10, norm, schedule=(3.0, 5.0, 1, 4, 2))
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
