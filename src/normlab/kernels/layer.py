"""LayerNorm fast path: same contract as :func:`normlab.functional.layer_norm_forward`/backward.

The cache keeps x (plus per-row mean and inv_std) instead of an x_hat array; the backward
recomputes x_hat on the fly, so neither pass writes more than its output.
"""

from __future__ import annotations

import numpy as np

from ..core.caches import LayerNormCache
from . import outputs
from . import rows_loops as loops
from ._jit import blocks


def _vector(v, d: int, dtype, fill: float) -> np.ndarray:
    return np.full(d, fill, dtype=dtype) if v is None else v.astype(dtype).ravel()


def forward(x: np.ndarray, normalized_shape: tuple[int, ...], weight, bias, eps: float
            ) -> tuple[np.ndarray, LayerNormCache]:
    k = len(normalized_shape)
    lead = x.shape[:x.ndim - k]
    x = np.ascontiguousarray(x)
    x2 = x.reshape(int(np.prod(lead, dtype=np.int64)), -1)
    n_r, n_d = x2.shape
    y2 = outputs.empty(x2.shape, x2.dtype)
    mean, inv_std, offset = np.empty(n_r, x.dtype), np.empty(n_r, x.dtype), np.empty(n_r)
    kernel = loops.layer_forward.pick(x2.nbytes)
    kernel(x2, _vector(weight, n_d, x.dtype, 1.0), _vector(bias, n_d, x.dtype, 0.0),
           eps, blocks(x2.nbytes), y2, mean, inv_std, offset)
    keep = lead + (1,) * k
    axes = tuple(range(x.ndim - k, x.ndim))
    cache = LayerNormCache(x, inv_std.reshape(keep), weight, axes, x.dtype, mean.reshape(keep),
                           saved_is_input=True, offset=offset)
    return y2.reshape(x.shape), cache


def backward(dy: np.ndarray, cache: LayerNormCache
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = cache.saved
    n_d = int(np.prod([x.shape[a] for a in cache.axes], dtype=np.int64))
    x2 = x.reshape(-1, n_d)
    dy2 = np.ascontiguousarray(dy.astype(x.dtype, copy=False)).reshape(x2.shape)
    n_blocks = blocks(x2.nbytes)
    dx2 = outputs.empty(x2.shape, x2.dtype)
    dweight, dbias = np.zeros((n_blocks, n_d)), np.zeros((n_blocks, n_d))
    loops.layer_backward.pick(x2.nbytes)(dy2, x2, cache.mean.ravel(), cache.offset,
                                         cache.inv_std.ravel(),
                                         _vector(cache.weight, n_d, x.dtype, 1.0), n_blocks, dx2,
                                         dweight, dbias)
    param_shape = x.shape[x.ndim - len(cache.axes):]
    return (dx2.reshape(x.shape).astype(cache.dtype, copy=False),
            dweight.sum(axis=0).astype(x.dtype).reshape(param_shape),
            dbias.sum(axis=0).astype(x.dtype).reshape(param_shape))
