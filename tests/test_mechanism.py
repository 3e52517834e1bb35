"""Verdicts that can fail: every experiment run with the mechanism under test removed.

BN replaced by an identity layer (or the variant by its baseline: the LSTM's normalisation by
none, the running-statistic estimators by the plain EMA and skip_nonfinite by the default)
must not read "holds". Where removing the mechanism makes the compared runs identical (same
weights, same batches), every effect is exactly zero and the verdict must be "does not hold".
The other direction -- that each rule does read "holds" on numbers that support the claim -- is
in the experiments' own tests (test_experiments_*.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from normlab import data, nn
from tests.pipeline import run_ci_pipeline


class NoNorm(nn.Module):
    """Stands in for BatchNorm1d/2d: passes values and gradients through untouched."""

    def __init__(self, num_features, *args, **kwargs):
        super().__init__()
        self.num_features, self.momentum = num_features, kwargs.get("momentum", 0.1)

    def forward(self, x):
        return x

    def backward(self, dy):
        return dy

    def reset_running_stats(self):
        pass


def _no_bn(mp):
    mp.setattr(nn, "BatchNorm1d", NoNorm)
    mp.setattr(nn, "BatchNorm2d", NoNorm)


def _no_lstm_norm(mp):
    real = nn.LSTM   # what normlab.engines.numpy_lstm.build_lstm builds
    mp.setattr(nn, "LSTM", lambda *a, norm=None, **k: real(*a, norm="none", **k))


def _plain_estimators(mp):
    from normlab.experiments import running_stats

    real = running_stats.configure_bn
    mp.setattr(running_stats, "configure_bn",
               lambda t, **o: real(t, **{**o, "running_stats": "ema", "skip_nonfinite": False}))


# experiment -> (how to remove its mechanism, the verdicts allowed without it)
REMOVED = {
    "paper-fig1": (_no_bn, {"does not hold"}),
    "init-scale": (_no_bn, {"does not hold"}),
    "train-eval": (_no_bn, {"does not hold"}),
    "regularization": (_no_bn, {"does not hold", "inconclusive"}),   # precondition may fail
    "landscape": (_no_bn, {"does not hold"}),
    "rnn-norm": (_no_lstm_norm, {"does not hold", "inconclusive"}),  # h0 noise still differs
    "learning-rate": (_no_bn, {"does not hold"}),
    "batch-size": (_no_bn, {"does not hold"}),
    "conv-bn": (_no_bn, {"does not hold"}),
    "running-stats": (_plain_estimators, {"does not hold"}),
}


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


@pytest.mark.parametrize("name", list(REMOVED))
def test_verdict_fails_without_the_mechanism(name, digits, tmp_path):
    remove, allowed = REMOVED[name]
    mp = pytest.MonkeyPatch()
    try:
        remove(mp)
        results = run_ci_pipeline([name], tmp_path, digits, seeds=2)
    finally:
        mp.undo()
    entry = results["experiments"][name]
    assert entry["verdict"] in allowed, entry["reason"]
    # every published number is set beside one of the statistics we measure
    for p in entry["published"]:
        assert p["ours"] is None or p["ours"] in entry["intervals"], p["ours"]


def test_no_norm_really_is_the_identity():
    m = NoNorm(3)
    x = np.arange(6.0).reshape(2, 3)
    assert m(x) is x and m.backward(x) is x and not list(m.parameters())
