"""Ghost batch norm, NumPy functional: splits, BN equivalences, running update, gradcheck."""

from __future__ import annotations

import numpy as np
import pytest

from normlab import functional as F
from normlab.functional.ghost import ghost_batch_stats
from tests.gradcheck import assert_grad_close, numerical_grad


@pytest.mark.parametrize("n,v,expected", [
    (8, 4, [(0, 4), (4, 8)]),
    (10, 4, [(0, 4), (4, 8), (8, 10)]),
    (9, 4, [(0, 4), (4, 9)]),           # remainder of one joins the previous chunk
    (3, 8, [(0, 3)]),
    (5, 5, [(0, 5)]),
])
def test_virtual_splits(n, v, expected):
    assert F.virtual_splits(n, v) == expected


def test_virtual_splits_rejects_bad_size():
    with pytest.raises(ValueError, match="virtual_batch_size"):
        F.virtual_splits(8, 0)


def _params(c, rng):
    return rng.uniform(0.5, 1.5, c), rng.normal(size=c)


@pytest.mark.parametrize("shape", [(6, 3), (5, 2, 3), (4, 2, 2, 3)])
def test_whole_batch_virtual_batch_is_batch_norm(shape):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape)
    w, b = _params(shape[1], rng)
    y, cache = F.ghost_batch_norm_train(x, shape[0], w, b)
    y_bn, bn = F.batch_norm_train(x, w, b)
    np.testing.assert_allclose(y, y_bn, rtol=1e-12, atol=1e-12)
    dy = rng.normal(size=shape)
    for g, g_bn in zip(F.ghost_batch_norm_backward(dy, cache), F.batch_norm_backward(dy, bn),
                       strict=True):
        np.testing.assert_allclose(g, g_bn, rtol=1e-12, atol=1e-12)
    rm, rv = rng.normal(size=shape[1]), rng.uniform(1, 2, shape[1])
    got = F.ghost_running_update(rm, rv, cache, 0.1)
    want = F.update_running_stats(rm, rv, bn, 0.1)
    for a, e in zip(got, want, strict=True):
        np.testing.assert_allclose(a, e, rtol=1e-12)


def test_each_virtual_batch_is_normalised_independently():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(9, 3)) * np.arange(1, 10)[:, None]  # chunks with different scales
    y, _ = F.ghost_batch_norm_train(x, 4)
    for s in (slice(0, 4), slice(4, 9)):
        np.testing.assert_allclose(y[s].mean(0), 0, atol=1e-12)
        np.testing.assert_allclose(y[s].var(0), 1, rtol=1e-3)  # eps makes it slightly < 1


def test_running_stats_are_weighted_means_of_virtual_batch_stats():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(10, 2)) + 3
    _, cache = F.ghost_batch_norm_train(x, 4)  # chunks of 4, 4, 2
    mean, var = ghost_batch_stats(cache)
    chunks = [x[0:4], x[4:8], x[8:10]]
    n = np.array([4, 4, 2])
    pairs = list(zip(n, chunks, strict=True))
    np.testing.assert_allclose(mean, sum(k * c.mean(0) for k, c in pairs) / 10)
    np.testing.assert_allclose(var, sum(k * c.var(0, ddof=1) for k, c in pairs) / 10)


@pytest.mark.parametrize("shape,v", [((7, 3), 3), ((6, 2, 3), 2), ((5, 2, 2, 2), 2)])
@pytest.mark.parametrize("affine", [True, False])
def test_backward_gradcheck(shape, v, affine):
    rng = np.random.default_rng(3)
    x = rng.normal(size=shape) * 2 + 1
    w, b = _params(shape[1], rng) if affine else (None, None)
    y, cache = F.ghost_batch_norm_train(x, v, w, b)
    g = rng.normal(size=y.shape)
    dx, dw, db = F.ghost_batch_norm_backward(g, cache)

    def loss() -> float:
        return float(np.sum(F.ghost_batch_norm_train(x, v, w, b)[0] * g))

    assert_grad_close(dx, numerical_grad(loss, x))
    if affine:
        assert_grad_close(dw, numerical_grad(loss, w))
        assert_grad_close(db, numerical_grad(loss, b))


def test_bad_input():
    with pytest.raises(ValueError, match="virtual_batch_size"):
        F.ghost_batch_norm_train(np.zeros((4, 2)), -1)
    with pytest.raises(ValueError, match="more than 1 value"):
        F.ghost_batch_norm_train(np.zeros((1, 2)), 4)
