"""The input of a batch norm is checked once, at the entry the user called: the nn layers check
theirs and hand it on unchecked; the functional entries check theirs (and ghost / renorm do not
check it again per virtual batch)."""

from __future__ import annotations

import numpy as np
import pytest

import normlab.functional as F
import normlab.nn as nn
from normlab._checks import as_float_array
from normlab.functional import batch


@pytest.fixture
def checks(monkeypatch):
    """How many times an input went through the array check of :func:`batch.check_input`."""
    seen = []

    def counting(name, x):
        seen.append(name)
        return as_float_array(name, x)

    monkeypatch.setattr(batch, "as_float_array", counting)
    return seen


X = np.random.default_rng(0).normal(size=(8, 3, 4)).astype(np.float32)


@pytest.mark.parametrize("make", [
    lambda: nn.BatchNorm1d(3), lambda: nn.BatchNorm1d(3, virtual_batch_size=2),
    lambda: nn.BatchNorm1d(3).eval(), lambda: nn.BatchRenorm1d(3, r_max=2.0, d_max=1.0),
    lambda: nn.BatchRenorm1d(3, r_max=2.0, d_max=1.0, virtual_batch_size=4),
    lambda: nn.InstanceNorm1d(3, track_running_stats=True).eval()])
def test_a_layer_checks_its_input_once(make, checks):
    layer = make()
    layer(X)
    assert checks == ["x"]


@pytest.mark.parametrize("call", [
    lambda: F.batch_norm_train(X, np.ones(3, np.float32), np.zeros(3, np.float32)),
    lambda: F.batch_norm_eval(X, np.zeros(3, np.float32), np.ones(3, np.float32)),
    lambda: F.ghost_batch_norm_train(X, 2),
    lambda: F.batch_renorm_train(X, np.zeros(3, np.float32), np.ones(3, np.float32))])
def test_a_functional_entry_checks_its_input_once(call, checks):
    call()
    assert checks == ["x"]


def test_a_virtual_batch_without_a_variance_is_still_refused():
    with pytest.raises(ValueError, match=r"^x: expected more than 1 value per channel when "
                                         r"training, got input size \(1, 3\)"):
        nn.BatchNorm1d(3, virtual_batch_size=1)(np.ones((4, 3), np.float32))
    with pytest.raises(ValueError, match=r"got input size \(1, 3\)"):
        F.ghost_batch_norm_train(np.ones((4, 3)), 1)
