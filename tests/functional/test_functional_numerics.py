"""Numerics of the shared statistics helper: cancellation, float16, constant channels."""

from __future__ import annotations

import numpy as np
import pytest

from normlab import functional as F


def test_large_offset_float32_variance_is_accurate():
    """1e4 + N(0,1) in float32: E[x^2]-E[x]^2 would lose every digit; two-pass does not."""
    rng = np.random.default_rng(0)
    x64 = 1e4 + rng.normal(size=(4096, 3))
    x32 = x64.astype(np.float32)
    _, var32 = F.moments(x32, (0,))
    truth = x32.astype(np.float64).var(axis=0)
    np.testing.assert_allclose(var32.ravel(), truth, rtol=1e-3)
    naive = (x32 * x32).mean(0) - x32.mean(0) ** 2
    assert np.max(np.abs(naive / truth - 1)) > 1e-3  # the formula we refuse to use really fails


def test_float16_input_is_accumulated_in_float32():
    rng = np.random.default_rng(1)
    x16 = (rng.normal(size=(2048, 4)) * 2 + 100).astype(np.float16)
    y, cache = F.batch_norm_train(x16)
    assert y.dtype == np.float16 and cache.mean.dtype == np.float32
    assert np.isfinite(y).all()
    ref = F.batch_norm_train(x16.astype(np.float64))[0]
    # correct to float16 resolution: the output is O(1), fp16 spacing there is ~1e-3
    np.testing.assert_allclose(y.astype(np.float64), ref, atol=4e-3)
    # a float16 sum of 2048 values near 100 would overflow the 65504 limit; ours does not
    with np.errstate(over="ignore"):
        assert np.isinf(np.sum(x16, dtype=np.float16))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_constant_channel_gives_zeros_not_nan(dtype):
    x = np.ones((6, 2, 3), dtype=dtype)
    x[:, 1] = np.arange(18, dtype=dtype).reshape(6, 3)
    y, cache = F.batch_norm_train(x)
    assert np.isfinite(y).all()
    np.testing.assert_array_equal(y[:, 0], 0)
    dx, dw, db = F.batch_norm_backward(np.ones_like(x), cache)
    assert np.isfinite(dx).all() and np.isfinite(dw).all()


def test_unbiased_running_var_uses_bessel_correction():
    x = np.array([[1.0], [2.0], [4.0]])
    _, cache = F.batch_norm_train(x)
    _, running_var = F.update_running_stats(np.zeros(1), np.zeros(1), cache, 1.0)
    np.testing.assert_allclose(running_var, x.var(ddof=1))
    np.testing.assert_allclose(cache.var, x.var(ddof=0))


def test_cumulative_average_with_momentum_none():
    """momentum=None: the running mean after k batches is the plain mean of the k batch means."""
    rng = np.random.default_rng(2)
    batches = [rng.normal(loc=i, size=(5, 2)) for i in range(4)]
    mean, var = np.zeros(2), np.ones(2)
    for k, x in enumerate(batches, start=1):
        _, cache = F.batch_norm_train(x)
        mean, var = F.update_running_stats(mean, var, cache, F.averaging_factor(None, k))
    np.testing.assert_allclose(mean, np.mean([b.mean(0) for b in batches], axis=0))
    np.testing.assert_allclose(var, np.mean([b.var(0, ddof=1) for b in batches], axis=0))
