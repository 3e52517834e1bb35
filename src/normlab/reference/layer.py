"""Layer norm in NumPy (Ba, Kiros & Hinton 2016): statistics over each sample's trailing
``normalized_shape`` dims, elementwise gain and bias (eq. 4)."""

from __future__ import annotations

import numpy as np

from ..core.caches import LayerNormCache
from ..core.stats import normalize, normalize_backward
from .affine import affine


def forward(x: np.ndarray, normalized_shape: tuple[int, ...], weight, bias, eps: float
            ) -> tuple[np.ndarray, LayerNormCache]:
    axes = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    norm = normalize(x, axes, eps)
    y = affine(norm.x_hat, weight, bias, channelwise=False)
    cache = LayerNormCache(norm.x_hat, norm.inv_std, weight, axes, x.dtype)
    return y.astype(x.dtype, copy=False), cache


def backward(dy: np.ndarray, cache: LayerNormCache
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dweight/dbias sum over the leading (batch) axes; dx is normalize's backward."""
    x_hat, weight, axes = cache.x_hat, cache.weight, cache.axes
    dy = dy.astype(x_hat.dtype, copy=False)
    lead = tuple(range(x_hat.ndim - len(axes)))
    dbias = dy.sum(axis=lead)
    dweight = (dy * x_hat).sum(axis=lead)
    dx_hat = dy * weight if weight is not None else dy
    dx = normalize_backward(dx_hat, x_hat, cache.inv_std, axes)
    return dx.astype(cache.dtype, copy=False), dweight, dbias
