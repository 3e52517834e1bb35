"""The one statistics helper every norm family uses.

Every normalisation in this package -- batch, layer, group, instance, renorm, ghost -- is
``x_hat = (x - mean) / sqrt(var + eps)`` over some set of axes (Ioffe & Szegedy 2015, Alg. 1,
lines 1-3; Wu & He 2018, eq. 1). Only the axes differ, so the reduction lives here once.

Numerics: the variance is computed in two passes, ``mean((x - mean)^2)``, never as
``E[x^2] - E[x]^2``, which cancels catastrophically when |mean| >> std (1e4 + N(0,1) in float32
loses every significant digit that way). float16 input is accumulated in float32.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .shapes import compute_dtype, count

__all__ = ["Normalized", "compute_dtype", "count", "moments", "normalize", "normalize_backward",
           "recentre", "standardize"]


class Normalized(NamedTuple):
    """What the backward pass needs: ``x_hat`` and ``inv_std`` (keepdims over the axes)."""

    x_hat: np.ndarray
    mean: np.ndarray     # keepdims, compute dtype
    var: np.ndarray      # biased (divide by n), keepdims, compute dtype
    inv_std: np.ndarray  # 1 / sqrt(var + eps), keepdims


def moments(x: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and biased variance of ``x`` over ``axes`` (keepdims), two-pass, in compute dtype."""
    acc = compute_dtype(x.dtype)
    mean = np.mean(x, axis=axes, dtype=acc, keepdims=True)
    centered = x.astype(acc, copy=False) - mean  # a fresh array: safe to square in place
    np.square(centered, out=centered)
    var = np.mean(centered, axis=axes, keepdims=True)
    return mean, var


def recentre(centred: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Subtract, in place, the mean that ``x - mean`` still has over ``axes``; return it.

    That leftover is the rounding error of ``mean`` (the corrected two-pass algorithm of Chan,
    Golub & LeVeque 1983). It matters where inv_std is large: the error times inv_std shifts
    every x_hat alike, and a 2-value group with variance 30 eps gave dx off by 4e-4 relative
    without this step, 1e-6 with it (the kernels do the same in their backward passes).
    """
    offset = np.mean(centred, axis=axes, keepdims=True)
    centred -= offset
    return offset


def standardize(x: np.ndarray, mean: np.ndarray, inv_std: np.ndarray,
                recentre_axes: tuple[int, ...] | None = None) -> np.ndarray:
    """``x_hat = (x - mean) * inv_std`` (Alg. 1, line 3) from a saved input and its statistics.

    ``mean`` and ``inv_std`` broadcast against ``x``. With ``recentre_axes`` (batch statistics:
    the caches that saved x instead of x_hat) the rounding of ``mean`` is taken out first, as
    :func:`normalize` did in the forward; without (eval mode) the statistics are constants.
    """
    centred = x.astype(inv_std.dtype, copy=False) - mean
    if recentre_axes is not None:
        recentre(centred, recentre_axes)
    return centred * inv_std


def normalize(x: np.ndarray, axes: tuple[int, ...], eps: float) -> Normalized:
    """``x_hat = (x - mean) / sqrt(var + eps)`` over ``axes`` (Alg. 1, lines 1-3).

    The two-pass moments of :func:`moments`, written out so that the centred array is made once
    and becomes x_hat in place (one full-size temporary fewer than calling ``moments``).
    """
    acc = compute_dtype(x.dtype)
    mean = np.mean(x, axis=axes, dtype=acc, keepdims=True)
    x_hat = x.astype(acc, copy=False) - mean   # centred; scaled in place below
    mean += recentre(x_hat, axes)
    var = np.mean(np.square(x_hat), axis=axes, keepdims=True)
    inv_std = 1.0 / np.sqrt(var + eps)
    x_hat *= inv_std
    return Normalized(x_hat, mean, var, inv_std)


def normalize_backward(dx_hat: np.ndarray, x_hat: np.ndarray, inv_std: np.ndarray,
                       axes: tuple[int, ...]) -> np.ndarray:
    """Gradient of ``normalize`` w.r.t. its input, in the compact closed form.

    With m elements per statistic (Ioffe & Szegedy 2015, sec. 3, the chain-rule equations
    after Alg. 1, collapsed):

        dx = inv_std * (dx_hat - mean(dx_hat) - x_hat * mean(dx_hat * x_hat))

    The two means are the only reductions; the mean-removal makes ``sum(dx) == 0`` per group.
    """
    mean_d = np.mean(dx_hat, axis=axes, keepdims=True)
    mean_dx = np.mean(dx_hat * x_hat, axis=axes, keepdims=True)
    dx = dx_hat - mean_d
    dx -= x_hat * mean_dx
    dx *= inv_std
    return dx
