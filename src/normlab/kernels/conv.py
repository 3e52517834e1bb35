"""Conv2d fast path: channel-major im2col in compiled loops around three BLAS products.

The same contract as the readable :class:`normlab.nn.Conv2d` path (torch.nn.Conv2d semantics:
zero padding, stride, dilation, groups): :func:`forward` returns the (N, C_out, Ho, Wo) output,
C-contiguous, and a cache; :func:`backward` returns (dx or None, dweight, dbias or None).
See :mod:`.conv_loops` for the layout and why it is channel-major.

Outputs of 1 MB or more come from :mod:`.outputs` (reused once nothing references them); the
patch matrix too, which the cache holds until the next forward replaces it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import conv_loops as loops
from . import outputs


class ConvCache(NamedTuple):
    x: np.ndarray                    # the input, C-contiguous
    cols: np.ndarray | None          # (C*kh*kw, N*Ho*Wo) patches; None: made again if needed
    weight: np.ndarray               # (C_out, C/g*kh*kw) in the compute dtype
    geometry: tuple                  # (kh, kw, sh, sw, ph, pw, dh, dw, ho, wo)
    groups: int
    has_bias: bool


# Without a backward to keep them for (eval), the patches are made a block of images at a time,
# about this many bytes: the block stays in L2 between im2col and its product (an eval forward
# of 500 14x14 images otherwise writes and reads back a 14 MB patch matrix).
BLOCK_BYTES = 1 << 19


def forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride, padding,
            dilation, groups: int, out_hw: tuple[int, int], keep_patches: bool = True
            ) -> tuple[np.ndarray, ConvCache]:
    """y = conv2d(x, weight) + bias; ``out_hw`` = (Ho, Wo), already checked positive.

    ``keep_patches=False`` (no backward expected) works in blocks of images and keeps only x;
    a backward then makes the patches again.
    """
    x = np.ascontiguousarray(x)
    if not x.flags.writeable:
        # im2col and col2im share one compiled walk that writes the image in col2im: numba
        # cannot type it for a read-only array (np.load(mmap_mode="r"), a broadcast view)
        x = x.copy()
    n = x.shape[0]
    c_out, _, kh, kw = weight.shape
    ho, wo = out_hw
    dtype = np.result_type(x.dtype, weight.dtype)
    geometry = (kh, kw, *stride, *padding, *dilation, ho, wo)
    w = weight.reshape(c_out, -1).astype(dtype, copy=False)
    b = np.zeros(c_out, dtype) if bias is None else bias.astype(dtype, copy=False)
    y = outputs.empty((n, c_out, ho * wo), dtype)
    cols = None
    if keep_patches:
        cols = _patches(x, geometry, dtype)
        _product(w, cols, b, groups, y)
    else:
        per_image = x.shape[1] * kh * kw * ho * wo * dtype.itemsize
        step = max(1, BLOCK_BYTES // per_image)
        for start in range(0, n, step):
            block = x[start:start + step]
            _product(w, _patches(block, geometry, dtype), b, groups, y[start:start + step])
    cache = ConvCache(x, cols, w, geometry, groups, bias is not None)
    return y.reshape(n, c_out, ho, wo), cache


def _patches(x: np.ndarray, geometry: tuple, dtype) -> np.ndarray:
    kh, kw, ho, wo = geometry[0], geometry[1], geometry[-2], geometry[-1]
    cols = outputs.empty((x.shape[1] * kh * kw, x.shape[0] * ho * wo), dtype)
    loops.im2col(x, *geometry, cols)
    return cols


def _product(w: np.ndarray, cols: np.ndarray, bias: np.ndarray, groups: int, y: np.ndarray
             ) -> None:
    """y (N, C_out, P) = W @ cols + bias, group by group, through one (C_out, N*P) product."""
    ycols = outputs.empty((w.shape[0], cols.shape[1]), y.dtype)
    for wg, cg, yg in zip(_split(w, groups), _split(cols, groups), _split(ycols, groups),
                          strict=True):
        np.matmul(wg, cg, out=yg)
    loops.columns_to_nchw(ycols, bias, y)


def backward(dy: np.ndarray, cache: ConvCache, input_grad: bool = True
             ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """(dx or None, dweight (C_out, C/g*kh*kw), dbias or None) from dy (N, C_out, Ho, Wo)."""
    x, cols, w, geometry, groups, has_bias = cache
    dtype = w.dtype
    if cols is None:
        cols = _patches(x, geometry, dtype)
    n, c_out = dy.shape[:2]
    dycols = outputs.empty((c_out, cols.shape[1]), dtype)
    dbias = np.empty(c_out, dtype)
    loops.nchw_to_columns(dy.astype(dtype, copy=False).reshape(n, c_out, -1), dycols, dbias)
    dweight = np.empty_like(w)
    blocks = [_split(a, groups) for a in (w, cols, dycols, dweight)]
    for _, cg, dyg, dwg in zip(*blocks, strict=True):
        # (patches @ dY^T)^T: OpenBLAS runs this shape faster than dY @ patches^T
        dwg[...] = np.matmul(cg, dyg.T).T
    dx = None
    if input_grad:
        dcols = outputs.empty(cols.shape, dtype)
        for wg, _, dyg, dcg in zip(*blocks[:3], _split(dcols, groups), strict=True):
            np.matmul(wg.T, dyg, out=dcg)
        dx = outputs.empty(x.shape, dtype)
        loops.col2im(dcols, *geometry, dx)
        dx = dx.astype(x.dtype, copy=False)
    return dx, dweight, dbias if has_bias else None


def _split(a: np.ndarray, groups: int) -> list[np.ndarray]:
    """``groups`` equal row blocks of ``a`` (views): one group's rows of W, of the
    patch matrix, of the output columns."""
    return np.split(a, groups) if groups > 1 else [a]
