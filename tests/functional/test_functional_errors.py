"""Bad input to the functional core: a clear error naming the argument, expected and got."""

from __future__ import annotations

import numpy as np
import pytest

from normlab import _checks
from normlab import functional as F

X = np.ones((4, 3, 2), dtype=np.float32)

CASES = [
    ("one value per channel", lambda: F.batch_norm_train(np.ones((1, 3))), ValueError,
     "more than 1 value per channel when training, got input size (1, 3)"),
    ("one value per channel 4D", lambda: F.batch_norm_train(np.ones((1, 2, 1, 1))), ValueError,
     "more than 1 value per channel"),
    ("1D input", lambda: F.batch_norm_train(np.ones(5)), ValueError, "got 1D input"),
    ("6D input", lambda: F.batch_norm_train(np.ones((2,) * 6)), ValueError, "got 6D input"),
    ("int dtype", lambda: F.batch_norm_train(X.astype(np.int64)), TypeError, "got int64"),
    ("bool dtype", lambda: F.batch_norm_train(X.astype(bool)), TypeError, "got bool"),
    ("complex dtype", lambda: F.batch_norm_train(X.astype(complex)), TypeError, "complex128"),
    ("list input", lambda: F.batch_norm_train([[1.0, 2.0], [3.0, 4.0]]), TypeError, "got list"),
    ("channel mismatch", lambda: F.batch_norm_train(X, np.ones(4, np.float32)), ValueError,
     "expected 4 channels in dim 1, got 3"),
    ("bias shape", lambda: F.batch_norm_train(X, np.ones(3), np.ones(2)), ValueError,
     "bias: expected shape (3,), got (2,)"),
    ("negative eps", lambda: F.batch_norm_train(X, eps=-1e-5), ValueError, "eps: expected"),
    ("zero eps", lambda: F.batch_norm_eval(X, np.zeros(3), np.ones(3), eps=0.0), ValueError,
     "eps"),
    ("running_var shape", lambda: F.batch_norm_eval(X, np.zeros(3), np.ones(2)), ValueError,
     "running_var: expected shape (3,)"),
    ("eval channel mismatch", lambda: F.batch_norm_eval(X, np.zeros(5), np.ones(5)), ValueError,
     "expected 5 channels"),
    ("groups do not divide", lambda: F.group_norm_forward(np.ones((2, 6, 3)), 4), ValueError,
     "num_groups: expected a divisor of num_channels=6, got 4"),
    ("zero groups", lambda: F.group_norm_forward(np.ones((2, 6, 3)), 0), ValueError,
     "num_groups: expected a positive integer, got 0"),
    ("group of one value", lambda: F.group_norm_forward(np.ones((2, 3)), 3), ValueError,
     "more than 1 value per group"),
    ("normalized_shape", lambda: F.layer_norm_forward(np.ones((2, 5)), (4,)), ValueError,
     "expected trailing dims (4,)"),
]


@pytest.mark.parametrize("name,call,exc,message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_named(name, call, exc, message):
    with pytest.raises(exc) as info:
        call()
    assert message in str(info.value)


@pytest.mark.parametrize("momentum", [-0.1, 1.5, "0.1", True])
def test_momentum_outside_unit_interval(momentum):
    with pytest.raises(ValueError, match=r"momentum: expected a number in \[0, 1\] or None"):
        _checks.check_momentum(momentum)


def test_valid_momentum_passes():
    assert _checks.check_momentum(None) is None
    assert _checks.check_momentum(0) == 0.0


def test_views_with_odd_strides_work():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3, 8))
    view = x[::-1, :, ::2]
    y, _ = F.batch_norm_train(view)
    y_ref, _ = F.batch_norm_train(np.ascontiguousarray(view))
    np.testing.assert_array_equal(y, y_ref)
