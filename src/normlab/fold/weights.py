"""Folding a per-channel affine map (an eval-mode BatchNorm) into a neighbouring layer's weights.

At inference BN is y = x * scale + shift per channel (Ioffe & Szegedy 2015, Alg. 2, line 11).
A Linear or convolution is linear in its input and affine in its output, so the two compose into
one layer. Pure functions on arrays, computed in float64 so that folding adds no rounding of its
own; the caller casts back to the layer's dtype. Shared by the NumPy engine and the torch extras,
in the spirit of ``torch/nn/utils/fusion.py``.

Weight layouts follow torch: Linear (out, in); Conv (out, in/groups, *kernel);
ConvTranspose (in, out/groups, *kernel).
"""

from __future__ import annotations

import numpy as np


def _column(v: np.ndarray, ndim: int) -> np.ndarray:
    """(C,) -> (C, 1, 1, ...) so it broadcasts over the trailing ``ndim - 1`` axes."""
    return v.reshape((-1,) + (1,) * (ndim - 1))


def fold_into_preceding(weight: np.ndarray, bias: np.ndarray | None, scale: np.ndarray,
                        shift: np.ndarray, *, transposed: bool = False,
                        groups: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(weight', bias') of ``layer`` followed by ``y = z * scale + shift`` on its output channels.

    With z = W x + b:  W' = W * scale (per output channel),  b' = b * scale + shift.
    A missing bias counts as zero, so the folded layer always has one.
    """
    w = np.asarray(weight, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    shift = np.asarray(shift, dtype=np.float64)
    if transposed:
        # ConvTranspose keeps output channels in axis 1, group by group:
        # output channel g * out_g + j lives in weight[g * in_g:(g + 1) * in_g, j].
        in_ch, out_g = w.shape[:2]
        view = w.reshape((groups, in_ch // groups, out_g) + w.shape[2:])
        s = scale.reshape((groups, 1, out_g) + (1,) * (w.ndim - 2))
        w_folded = (view * s).reshape(w.shape)
    else:
        w_folded = w * _column(scale, w.ndim)
    b = 0.0 if bias is None else np.asarray(bias, dtype=np.float64)
    return w_folded, b * scale + shift


def fold_into_following(weight: np.ndarray, bias: np.ndarray | None, scale: np.ndarray,
                        shift: np.ndarray, *, groups: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(weight', bias') of ``x * scale + shift`` on the input channels followed by ``layer``.

    With y = W (x * scale + shift) + b, for a Linear or an UNPADDED convolution:
    W'[o, i, k] = W[o, i, k] * scale[c(o, i)],  b'[o] = b[o] + sum_{i,k} W[o, i, k] shift[c(o, i)],
    where c(o, i) is the input channel that weight entry reads (groups split the channels).
    Zero padding would feed literal zeros -- not ``shift`` -- at the borders, so the caller must
    not use this for a zero-padded convolution (replicate/reflect/circular padding copies the BN
    outputs themselves, so it stays exact).
    """
    w = np.asarray(weight, dtype=np.float64)
    out_ch, in_g = w.shape[:2]
    per_group = out_ch // groups

    def per_weight(v: np.ndarray) -> np.ndarray:
        # (C,) indexed by input channel -> (out, in/groups, 1, ...) indexed by weight entry.
        v = np.asarray(v, dtype=np.float64).reshape(groups, 1, in_g)
        v = np.broadcast_to(v, (groups, per_group, in_g)).reshape(out_ch, in_g)
        return v.reshape(v.shape + (1,) * (w.ndim - 2))

    w_folded = w * per_weight(scale)
    b = np.zeros(out_ch) if bias is None else np.asarray(bias, dtype=np.float64)
    b_folded = b + (w * per_weight(shift)).reshape(out_ch, -1).sum(axis=1)
    return w_folded, b_folded
