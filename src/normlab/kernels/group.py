"""GroupNorm fast path: same contract as :func:`normlab.functional.group_norm_forward`/backward.

Works on C-contiguous (N, C, ...) memory, where each (sample, group) is one contiguous block;
other layouts are copied to it first. The cache keeps x, not x_hat.
"""

from __future__ import annotations

import numpy as np

from ..core.caches import GroupNormCache
from . import outputs
from . import rows_loops as loops


def _vector(v, c: int, dtype, fill: float) -> np.ndarray:
    return np.full(c, fill, dtype=dtype) if v is None else v.astype(dtype)


def forward(x: np.ndarray, num_groups: int, weight, bias, eps: float
            ) -> tuple[np.ndarray, GroupNormCache]:
    n_batch, n_c = x.shape[:2]
    x = np.ascontiguousarray(x)
    x2 = x.reshape(n_batch * num_groups, -1)
    spatial = x2.shape[1] * num_groups // n_c
    y2 = outputs.empty(x2.shape, x2.dtype)
    mean, var, inv_std = (np.empty(x2.shape[0], x.dtype) for _ in range(3))
    offset = np.empty(x2.shape[0])
    kernel = loops.group_forward.pick(x2.nbytes)
    kernel(x2, _vector(weight, n_c, x.dtype, 1.0), _vector(bias, n_c, x.dtype, 0.0),
           num_groups, spatial, eps, y2, mean, var, inv_std, offset)
    grouped = (n_batch, num_groups)
    cache = GroupNormCache(x, inv_std.reshape(*grouped, 1), weight, mean.reshape(grouped),
                           var.reshape(grouped), x2.shape[1], tuple(x.shape), x.dtype,
                           saved_is_input=True, offset=offset)
    return y2.reshape(x.shape), cache


def backward(dy: np.ndarray, cache: GroupNormCache
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = cache.saved
    n_batch, n_c = x.shape[:2]
    num_groups = cache.mean.shape[1]
    x2 = x.reshape(n_batch * num_groups, -1)
    dy2 = np.ascontiguousarray(dy.astype(x.dtype, copy=False)).reshape(x2.shape)
    dx2 = outputs.empty(x2.shape, x2.dtype)
    dweight, dbias = np.empty((n_batch, n_c)), np.empty((n_batch, n_c))
    loops.group_backward.pick(x2.nbytes)(dy2, x2, cache.mean.ravel(), cache.offset,
                                         cache.inv_std.ravel(),
                                         _vector(cache.weight, n_c, x.dtype, 1.0), num_groups,
                                         x2.shape[1] * num_groups // n_c, dx2, dweight, dbias)
    return (dx2.reshape(x.shape).astype(cache.dtype, copy=False),
            dweight.sum(axis=0).astype(x.dtype), dbias.sum(axis=0).astype(x.dtype))
