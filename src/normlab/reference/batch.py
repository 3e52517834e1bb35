"""Batch norm in NumPy (Ioffe & Szegedy 2015): the reference the numba kernels are tested
against. Statistics per channel over every axis but C (sec. 3.2)."""

from __future__ import annotations

import numpy as np

from ..core.caches import BatchNormCache
from ..core.shapes import channel_axes, compute_dtype, count, per_channel
from ..core.stats import normalize
from .affine import affine


def train(x: np.ndarray, weight, bias, eps: float) -> tuple[np.ndarray, BatchNormCache]:
    """Alg. 1 with the biased batch variance; the cache keeps x_hat."""
    axes = channel_axes(x.ndim)
    norm = normalize(x, axes, eps)
    y = affine(norm.x_hat, weight, bias, channelwise=True)
    cache = BatchNormCache(norm.x_hat, norm.inv_std, weight, norm.mean.ravel(), norm.var.ravel(),
                           count(x.shape, axes), x.dtype)
    return y.astype(x.dtype, copy=False), cache


def evaluate(x: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Alg. 2, line 11: y = x * scale + shift per channel, in the compute dtype."""
    acc = compute_dtype(x.dtype)
    y = x * per_channel(scale.astype(acc), x.ndim)
    y += per_channel(shift.astype(acc), x.ndim)
    return y.astype(x.dtype, copy=False)


def backward(dy: np.ndarray, cache: BatchNormCache
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The compact closed form (see :func:`normlab.functional.batch.batch_norm_backward`)."""
    x_hat, inv_std, weight = cache.x_hat, cache.inv_std, cache.weight
    axes = channel_axes(x_hat.ndim)
    dy = dy.astype(x_hat.dtype, copy=False)
    dbias = dy.sum(axis=axes)
    tmp = np.multiply(dy, x_hat)          # the one full-size temporary, reused below
    dweight = tmp.sum(axis=axes)
    scale = inv_std if weight is None else inv_std * per_channel(weight, dy.ndim)
    # dx = scale*dy - (x_hat * scale*dgamma/m + scale*dbeta/m), constants folded per channel
    np.multiply(x_hat, scale * per_channel(dweight / cache.n, dy.ndim), out=tmp)
    tmp += scale * per_channel(dbias / cache.n, dy.ndim)
    dx = np.multiply(dy, scale)
    dx -= tmp
    return dx.astype(cache.dtype, copy=False), dweight, dbias
