"""Group norm in NumPy (Wu & He 2018, eq. 1 with S_i = the sample's channel group): each
sample's C/G channels x spatial positions viewed as one row of an (N, G, .) array."""

from __future__ import annotations

import numpy as np

from ..core.caches import GroupNormCache
from ..core.shapes import count, per_channel
from ..core.stats import normalize, normalize_backward
from .affine import affine


def forward(x: np.ndarray, num_groups: int, weight, bias, eps: float
            ) -> tuple[np.ndarray, GroupNormCache]:
    # explicit group size: -1 cannot be inferred for an empty batch (torch returns it empty)
    grouped = x.reshape(x.shape[0], num_groups, x.shape[1] // num_groups
                        * count(x.shape, tuple(range(2, x.ndim))))
    norm = normalize(grouped, (2,), eps)
    y = affine(norm.x_hat.reshape(x.shape), weight, bias, channelwise=True)
    cache = GroupNormCache(norm.x_hat, norm.inv_std, weight, norm.mean[..., 0], norm.var[..., 0],
                           count(grouped.shape, (2,)), tuple(x.shape), x.dtype)
    return y.astype(x.dtype, copy=False), cache


def backward(dy: np.ndarray, cache: GroupNormCache
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The parameter gradients are per channel; dx is normalize's backward per group."""
    shape, weight = cache.shape, cache.weight
    grouped_x_hat = cache.x_hat
    x_hat = grouped_x_hat.reshape(shape)
    dy = dy.astype(x_hat.dtype, copy=False)
    axes = (0, *range(2, len(shape)))
    dbias = dy.sum(axis=axes)
    dweight = (dy * x_hat).sum(axis=axes)
    dx_hat = dy * per_channel(weight, dy.ndim) if weight is not None else dy
    dx = normalize_backward(dx_hat.reshape(grouped_x_hat.shape), grouped_x_hat, cache.inv_std,
                            (2,))
    return dx.reshape(shape).astype(cache.dtype, copy=False), dweight, dbias
