"""RMSNorm in NumPy (Zhang & Sennrich 2019, eq. 4): each sample's trailing ``normalized_shape``
dims divided by their root mean square, ``y = x / sqrt(mean(x^2) + eps) * g``; no re-centering
and no bias. The cache is :class:`~normlab.core.caches.LayerNormCache` without a mean: the
normalised input, 1/RMS, the gain, the normalised axes and the input dtype.
"""

from __future__ import annotations

import numpy as np

from ..core.caches import LayerNormCache
from ..core.shapes import compute_dtype


def forward(x: np.ndarray, normalized_shape: tuple[int, ...], weight, eps: float
            ) -> tuple[np.ndarray, LayerNormCache]:
    axes = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    xc = x.astype(compute_dtype(x.dtype), copy=False)
    inv_rms = 1.0 / np.sqrt(np.mean(np.square(xc), axis=axes, keepdims=True) + eps)
    x_hat = xc * inv_rms
    y = x_hat * weight if weight is not None else x_hat
    return y.astype(x.dtype, copy=False), LayerNormCache(x_hat, inv_rms, weight, axes, x.dtype)


def backward(dy: np.ndarray, cache: LayerNormCache) -> tuple[np.ndarray, np.ndarray]:
    """(dx, dweight). With r = 1/RMS and g = dy * weight, d r / d x_j = -r^3 x_j / n, so
    dx = r * (g - x_hat * mean(g * x_hat)) over the normalised axes; dweight sums dy * x_hat
    over the leading (batch) axes."""
    x_hat, axes = cache.x_hat, cache.axes
    dy = dy.astype(x_hat.dtype, copy=False)
    lead = tuple(range(x_hat.ndim - len(axes)))
    dweight = (dy * x_hat).sum(axis=lead)
    g = dy * cache.weight if cache.weight is not None else dy
    dx = cache.inv_std * (g - x_hat * np.mean(g * x_hat, axis=axes, keepdims=True))
    return dx.astype(cache.dtype, copy=False), dweight
