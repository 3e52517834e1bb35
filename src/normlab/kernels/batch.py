"""Batch-norm fast path: the interface of :mod:`normlab.reference.batch`, numba loops.

Called by :mod:`normlab.functional` after it has validated the arguments. The training cache keeps a
reference to the input ``x`` (plus mean and inv_std) instead of writing an ``x_hat`` array: the
forward then reads x and writes y only, and the backward re-derives x_hat on the fly. Like
PyTorch's saved tensors, this assumes the caller does not modify ``x`` in place before backward.
"""

from __future__ import annotations

import numpy as np

from ..core.caches import BatchNormCache
from ..core.shapes import channel_axes, count, per_channel
from . import batch_loops as loops
from . import outputs
from ._jit import blocks


def _layout(x: np.ndarray) -> tuple[str, np.ndarray]:
    """("mc", (M, C) view) for (N, C) and channels-last, else ("ncs", (N, C, S) contiguous)."""
    n_batch, n_c = x.shape[:2]
    if x.flags.c_contiguous:   # the common cases, without moveaxis: (N, C) and NCHW
        return ("mc", x) if x.ndim == 2 else ("ncs", x.reshape(n_batch, n_c, -1))
    last = np.moveaxis(x, 1, -1)
    if last.flags.c_contiguous:   # channels-last
        return "mc", last.reshape(-1, n_c)
    return "ncs", np.ascontiguousarray(x).reshape(n_batch, n_c, -1)


def _like(layout: str, flat: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """View a kernel output back as ``shape`` (N, C, ...), in the layout it was computed in."""
    if layout == "ncs" or len(shape) == 2:
        return flat.reshape(shape)
    return np.moveaxis(flat.reshape((shape[0], *shape[2:], shape[1])), -1, 1)


def _as_layout(layout: str, a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``a`` (N, C, ...) in the given layout and dtype, copying only when it must."""
    a = a.astype(dtype, copy=False)
    if layout == "ncs":
        return np.ascontiguousarray(a).reshape(a.shape[0], a.shape[1], -1)
    if a.ndim == 2:
        return np.ascontiguousarray(a)
    return np.ascontiguousarray(np.moveaxis(a, 1, -1)).reshape(-1, a.shape[1])


def _vector(v, n_c: int, fill: float) -> np.ndarray:
    """A parameter vector for the loops (float32 or float64; they compute in float64).

    float16 parameters reach here when the NumPy path trained a float16 input (it saves a
    float32 x_hat, which the backward kernel handles); numba has no float16, so they widen.
    """
    if v is None:
        return np.full(n_c, fill)
    return v if v.dtype in (np.float32, np.float64) else v.astype(np.float64)


def train(x: np.ndarray, weight, bias, eps: float) -> tuple[np.ndarray, BatchNormCache]:
    n_c = x.shape[1]
    w, b = _vector(weight, n_c, 1.0), _vector(bias, n_c, 0.0)
    # the loops compute in float64 and store the statistics in the data dtype
    mean, var, inv_std = (np.empty(n_c, x.dtype) for _ in range(3))
    offset = np.empty(n_c)
    layout, flat = _layout(x)
    out = outputs.empty(flat.shape, flat.dtype)
    if layout == "ncs":
        loops.train_ncs.pick(flat.nbytes)(flat, w, b, eps, out, mean, var, inv_std, offset)
    else:
        loops.train_mc.pick(flat.nbytes)(flat, w, b, eps, blocks(flat.nbytes), out, mean, var,
                                         inv_std, offset)
    cache = BatchNormCache(x, per_channel(inv_std, x.ndim), weight, mean, var,
                           count(x.shape, channel_axes(x.ndim)), x.dtype, saved_is_input=True,
                           offset=offset)
    return _like(layout, out, x.shape), cache


def eval_vectors(scale: np.ndarray, shift: np.ndarray, dtype) -> tuple[np.ndarray, ...]:
    """(center, scale, shift) for the loops' (x - center) * scale + shift of an eval forward:
    center 0, all three in the data dtype (the loops that fuse the map in compute the same
    bits from the same three)."""
    return np.zeros(scale.shape[0], dtype=dtype), scale.astype(dtype), shift.astype(dtype)


def evaluate(x: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """y = x * scale + shift per channel (Alg. 2, line 11), scale/shift in the data dtype."""
    center, scale, shift = eval_vectors(scale, shift, x.dtype)
    layout, flat = _layout(x)
    out = outputs.empty(flat.shape, flat.dtype)
    if layout == "ncs":
        loops.affine_ncs.pick(flat.nbytes)(flat, center, scale, shift, out)
    else:
        loops.affine_mc.pick(flat.nbytes)(flat, center, scale, shift, blocks(flat.nbytes), out)
    return _like(layout, out, x.shape)


def backward(dy: np.ndarray, cache: BatchNormCache
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    saved = cache.saved
    n_c = saved.shape[1]
    inv_std = cache.inv_std.ravel()
    if cache.saved_is_input:   # x_hat = (x - mean - offset) * inv_std
        center, gain, offset = cache.mean.astype(saved.dtype, copy=False), inv_std, cache.offset
    else:                      # the NumPy path saved x_hat itself
        center, gain = np.zeros(n_c, dtype=saved.dtype), np.ones(n_c)
        offset = np.zeros(n_c)
    w = _vector(cache.weight, n_c, 1.0)
    layout, s = _layout(saved)
    g = _as_layout(layout, dy, saved.dtype)
    dx = outputs.empty(s.shape, s.dtype)
    dweight, dbias = np.empty(n_c, saved.dtype), np.empty(n_c, saved.dtype)
    if layout == "ncs":
        loops.backward_ncs.pick(s.nbytes)(g, s, center, offset, gain, inv_std, w, dx, dweight,
                                          dbias)
    else:
        loops.backward_mc.pick(s.nbytes)(g, s, center, offset, gain, inv_std, w,
                                         blocks(s.nbytes), dx, dweight, dbias)
    return _like(layout, dx, saved.shape).astype(cache.dtype, copy=False), dweight, dbias
