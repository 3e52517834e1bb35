"""Float64 central finite-difference checks of every hand-written backward in functional/."""

from __future__ import annotations

import numpy as np
import pytest

from normlab import functional as F
from tests.gradcheck import assert_grad_close, numerical_grad


def check_family(forward, backward, x, params, rng):
    """Compare backward's (dx, *dparams) with finite differences of sum(forward(x) * r)."""
    y, cache = forward(x, *params)
    r = rng.normal(size=y.shape)
    grads = backward(r, cache)

    def loss() -> float:
        return float(np.sum(forward(x, *params)[0] * r))

    assert_grad_close(grads[0], numerical_grad(loss, x))
    for p, g in zip(params, grads[1:], strict=True):
        if p is not None:
            assert_grad_close(g, numerical_grad(loss, p))


@pytest.mark.parametrize("shape", [(5, 3), (4, 2, 3), (3, 2, 2, 3), (2, 2, 2, 2, 2)])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_backward(shape, affine):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape) * 2 + 1
    c = shape[1]
    params = [rng.uniform(0.5, 1.5, c), rng.normal(size=c)] if affine else [None, None]
    check_family(F.batch_norm_train, F.batch_norm_backward, x, params, rng)


@pytest.mark.parametrize("shape,normalized_shape", [((4, 5), (5,)), ((2, 3, 4), (3, 4)),
                                                    ((2, 3, 2, 2), (2,))])
def test_layer_norm_backward(shape, normalized_shape):
    rng = np.random.default_rng(1)
    x = rng.normal(size=shape)
    params = [rng.uniform(0.5, 1.5, normalized_shape), rng.normal(size=normalized_shape)]
    check_family(lambda x, w, b: F.layer_norm_forward(x, normalized_shape, w, b),
                 F.layer_norm_backward, x, params, rng)


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_group_norm_backward(groups):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 4, 3, 2))
    params = [rng.uniform(0.5, 1.5, 4), rng.normal(size=4)]
    check_family(lambda x, w, b: F.group_norm_forward(x, groups, w, b),
                 F.group_norm_backward, x, params, rng)


def test_instance_norm_backward():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 3, 5))
    check_family(F.instance_norm_forward, F.instance_norm_backward, x, [None, None], rng)


def test_batch_norm_gradient_sums_to_zero_per_channel():
    """Mean removal: shifting a channel's inputs by a constant leaves y unchanged, so the
    gradient of any loss w.r.t. x sums to zero per channel (affine off)."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(8, 3, 4)) * 5 + 7
    _, cache = F.batch_norm_train(x)
    dx, _, _ = F.batch_norm_backward(rng.normal(size=x.shape), cache)
    np.testing.assert_allclose(dx.sum(axis=(0, 2)), 0, atol=1e-12)
