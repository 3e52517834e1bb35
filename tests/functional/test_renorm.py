"""Batch Renormalization, NumPy functional: schedule, BN equivalence, float64 gradcheck."""

from __future__ import annotations

import numpy as np
import pytest

from normlab import functional as F
from normlab.functional.renorm import RenormSchedule, renorm_correction
from tests.gradcheck import assert_grad_close, numerical_grad


def test_paper_schedule_endpoints_and_ramps():
    s = RenormSchedule()
    assert s(0) == (1.0, 0.0)
    assert s(4_999) == (1.0, 0.0)
    assert s(5_000) == (1.0, 0.0)
    # halfway along each ramp: r from 1 to 3 over [5k, 40k], d from 0 to 5 over [5k, 25k]
    assert s(22_500)[0] == pytest.approx(2.0)
    assert s(15_000)[1] == pytest.approx(2.5)
    assert s(25_000)[1] == 5.0
    assert s(40_000) == (3.0, 5.0)
    assert s(10**7) == (3.0, 5.0)
    assert RenormSchedule.constant(2.0, 1.0)(0) == (2.0, 1.0)


@pytest.mark.parametrize("kwargs,arg", [({"r_max": 0.5}, "r_max"), ({"d_max": -1}, "d_max"),
                                        ({"warmup": -1}, "warmup"),
                                        ({"warmup": 10, "r_max_at": 5}, "r_max_at")])
def test_schedule_rejects_bad_arguments(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        RenormSchedule(**kwargs)


def _setup(shape, seed=0):
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = rng.normal(size=shape) * 2 + 1
    rm, rv = rng.normal(size=c), rng.uniform(0.5, 3.0, c)
    w, b = rng.uniform(0.5, 1.5, c), rng.normal(size=c)
    return rng, x, rm, rv, w, b


@pytest.mark.parametrize("shape", [(6, 3), (4, 2, 3), (3, 2, 2, 3)])
def test_equals_batch_norm_when_r_max_1_d_max_0(shape):
    _, x, rm, rv, w, b = _setup(shape)
    y, cache = F.batch_renorm_train(x, rm, rv, w, b, r_max=1.0, d_max=0.0)
    y_bn, bn = F.batch_norm_train(x, w, b)
    np.testing.assert_allclose(y, y_bn, rtol=1e-12, atol=1e-12)
    dy = np.random.default_rng(1).normal(size=shape)
    for g, g_bn in zip(F.batch_renorm_backward(dy, cache), F.batch_norm_backward(dy, bn),
                       strict=True):
        np.testing.assert_allclose(g, g_bn, rtol=1e-12, atol=1e-12)


def test_forward_matches_the_papers_formula_with_clipping():
    _, x, rm, rv, w, b = _setup((8, 4))
    eps, r_max, d_max = 1e-5, 1.2, 0.3
    y, cache = F.batch_renorm_train(x, rm, rv, w, b, eps, r_max, d_max)
    mu_b, sigma_b = x.mean(0), np.sqrt(x.var(0) + eps)
    sigma = np.sqrt(rv + eps)
    r = np.clip(sigma_b / sigma, 1 / r_max, r_max)
    d = np.clip((mu_b - rm) / sigma, -d_max, d_max)
    np.testing.assert_allclose(y, w * ((x - mu_b) / sigma_b * r + d) + b, rtol=1e-12)
    # the clipping is exercised: some channel hits a limit
    assert np.any(np.isclose(np.abs(cache.d), d_max)) or np.any(
        np.isclose(cache.r, r_max) | np.isclose(cache.r, 1 / r_max))


def _renorm_fixed_rd(x, w, b, r, d, eps):
    """Reference forward with r and d held fixed (the stop-gradient), straight from Alg. 1."""
    axes = (0, *range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mu = x.mean(axis=axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
    x_hat = (x - mu) / np.sqrt(var + eps)
    out = x_hat * r.reshape(shape) + d.reshape(shape)
    return out * w.reshape(shape) + b.reshape(shape) if w is not None else out


@pytest.mark.parametrize("shape", [(6, 3), (4, 2, 3), (3, 2, 2, 2)])
@pytest.mark.parametrize("affine", [True, False])
def test_backward_gradcheck_with_r_d_constant(shape, affine):
    rng, x, rm, rv, w, b = _setup(shape, seed=2)
    if not affine:
        w = b = None
    eps, r_max, d_max = 1e-5, 1.5, 0.5
    y, cache = F.batch_renorm_train(x, rm, rv, w, b, eps, r_max, d_max)
    r, d = cache.r.copy(), cache.d.copy()
    np.testing.assert_allclose(y, _renorm_fixed_rd(x, w, b, r, d, eps), rtol=1e-12, atol=1e-12)
    g = rng.normal(size=shape)
    dx, dw, db = F.batch_renorm_backward(g, cache)

    def loss() -> float:
        return float(np.sum(_renorm_fixed_rd(x, w, b, r, d, eps) * g))

    assert_grad_close(dx, numerical_grad(loss, x))
    if affine:
        assert_grad_close(dw, numerical_grad(loss, w))
        assert_grad_close(db, numerical_grad(loss, b))
    else:
        assert dw is None and db is None


def test_correction_clips_to_limits():
    r, d = renorm_correction(np.array([10.0, -10.0]), np.array([100.0, 1e-4]),
                             np.zeros(2), np.ones(2), 1e-5, 3.0, 5.0)
    np.testing.assert_allclose(r, [3.0, 1 / 3])
    np.testing.assert_allclose(d, [5.0, -5.0])


def test_bad_input_raises_before_computing():
    _, x, rm, rv, w, b = _setup((4, 3))
    with pytest.raises(ValueError, match="running_var"):
        F.batch_renorm_train(x, rm, rv[:2], w, b)
    with pytest.raises(ValueError, match="channels"):
        F.batch_renorm_train(x[:, :2], rm, rv, w, b)
    with pytest.raises(ValueError, match="r_max"):
        F.batch_renorm_train(x, rm, rv, w, b, r_max=0.5)
    with pytest.raises(TypeError, match="x"):
        F.batch_renorm_train(x.astype(np.int64), rm, rv, w, b)
