"""MaxPool2d fast path: one compiled pass per direction, the window maxima and their positions.

Same contract as the readable :class:`normlab.nn.MaxPool2d` path (torch.nn.MaxPool2d: implicit
-inf padding, the gradient to the first maximal element of each window in row-major window
order, a NaN in a window is its maximum -- the first NaN, as ``np.argmax`` picks it). The
forward keeps each window's winner as a flat index into its (H, W) plane (int32); the backward
adds dy there. Outputs of 1 MB or more come from :mod:`.outputs`.
"""

from __future__ import annotations

import numpy as np

from . import outputs
from ._jit import jit


@jit
def max_pool_forward(x, kh, kw, sh, sw, ph, pw, y, arg):
    """y[n, c, oh, ow] = max of the window at (oh*sh - ph, ow*sw - pw); arg = its flat index."""
    n_, c_, h, w = x.shape
    ho, wo = y.shape[2], y.shape[3]
    for n in range(n_):
        for c in range(c_):
            plane, yp, ap = x[n, c], y[n, c], arg[n, c]
            for oh in range(ho):
                r0 = oh * sh - ph
                for ow in range(wo):
                    c0 = ow * sw - pw
                    best = plane[max(r0, 0), max(c0, 0)]
                    at = -1
                    for i in range(max(0, -r0), min(kh, h - r0)):
                        for j in range(max(0, -c0), min(kw, w - c0)):
                            v = plane[r0 + i, c0 + j]
                            # the first value, any larger one, or the first NaN
                            if at < 0 or v > best or (v != v and best == best):
                                best = v
                                at = (r0 + i) * w + c0 + j
                    yp[oh, ow] = best
                    ap[oh, ow] = at


@jit
def max_pool_2x2(x, y, arg):
    """:func:`max_pool_forward` for 2x2 windows, stride 2, no padding, without the NaN rule;
    returns how many windows have a NaN sum (a NaN, or +inf and -inf): 0 means y is exact."""
    n_, c_, h, w = x.shape
    ho, wo = y.shape[2], y.shape[3]
    suspect = 0
    for n in range(n_):
        for c in range(c_):
            for oh in range(ho):
                top, bottom = x[n, c, 2 * oh], x[n, c, 2 * oh + 1]
                yr, ar = y[n, c, oh], arg[n, c, oh]
                for ow in range(wo):
                    a, b, d, e = top[2 * ow], top[2 * ow + 1], bottom[2 * ow], bottom[2 * ow + 1]
                    at = 2 * oh * w + 2 * ow
                    best, win = a, at
                    # strictly larger: ties stay with the earlier element
                    win = at + 1 if b > best else win
                    best = b if b > best else best
                    win = at + w if d > best else win
                    best = d if d > best else best
                    win = at + w + 1 if e > best else win
                    best = e if e > best else best
                    total = a + b + d + e
                    suspect += total != total
                    yr[ow] = best
                    ar[ow] = win
    return suspect


@jit
def max_pool_backward(dy, arg, dx):
    """dx (zeroed here, C-contiguous) += dy at each window's winner."""
    n_, c_, h, w = dx.shape
    ho, wo = dy.shape[2], dy.shape[3]
    dx[:] = 0
    flat = dx.reshape(n_, c_, h * w)
    for n in range(n_):
        for c in range(c_):
            plane, g, a = flat[n, c], dy[n, c], arg[n, c]
            for oh in range(ho):
                for ow in range(wo):
                    plane[a[oh, ow]] += g[oh, ow]


def forward(x: np.ndarray, kernel, stride, padding, out_hw) -> tuple[np.ndarray, np.ndarray]:
    """(y (N, C, Ho, Wo), winners (N, C, Ho, Wo) int32)."""
    n, c = x.shape[:2]
    y = outputs.empty((n, c, *out_hw), x.dtype)
    arg = outputs.empty((n, c, *out_hw), np.int32)
    if (tuple(kernel), tuple(stride), tuple(padding)) == ((2, 2), (2, 2), (0, 0)):
        if max_pool_2x2(x, y, arg) == 0:
            return y, arg
    max_pool_forward(x, *kernel, *stride, *padding, y, arg)
    return y, arg


def backward(dy: np.ndarray, arg: np.ndarray, x_shape: tuple[int, ...], dtype) -> np.ndarray:
    """dx of the input's shape and ``dtype``."""
    dx = outputs.empty(x_shape, dtype)
    max_pool_backward(dy, arg, dx)
    return dx
