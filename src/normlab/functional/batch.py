"""Batch normalization: training forward, eval forward, backward, running statistics.

Ioffe & Szegedy 2015, "Batch Normalization: Accelerating Deep Network Training by Reducing
Internal Covariate Shift". Statistics are per channel over every axis but C (sec. 3.2: for
convolutions the mini-batch is all N*H*W positions of a feature map), matching torch.nn.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import kernels
from .._checks import as_float_array, check_eps, check_grad, check_ndim, check_param
from .stats import compute_dtype, count, normalize, recentre


class BatchNormCache(NamedTuple):
    saved: np.ndarray           # x_hat (NumPy path), or x itself when saved_is_input (kernels)
    inv_std: np.ndarray         # keepdims per-channel 1/sqrt(var + eps)
    weight: np.ndarray | None   # gamma, or None when affine=False
    mean: np.ndarray            # (C,) batch mean
    var: np.ndarray             # (C,) biased batch variance (what normalises, Alg. 1 line 2)
    n: int                      # values per channel, the paper's m
    dtype: np.dtype             # dtype of the input, for casting dx back
    saved_is_input: bool = False
    # (C,) float64, kernels only: the exact batch mean minus ``mean`` (which is rounded to the
    # data dtype). The kernel backward takes it out of x_hat again; see kernels.batch_loops.
    offset: np.ndarray | None = None

    @property
    def x_hat(self) -> np.ndarray:
        """The normalised input (recomputed when the fast path saved x instead)."""
        if not self.saved_is_input:
            return self.saved
        x = self.saved.astype(self.inv_std.dtype, copy=False)
        centred = x - per_channel(self.mean, x.ndim)
        recentre(centred, channel_axes(x.ndim))
        return centred * self.inv_std


def channel_axes(ndim: int) -> tuple[int, ...]:
    """Every axis but the channel axis 1: (0,) for (N,C), (0,2,3) for (N,C,H,W), ..."""
    return (0, *range(2, ndim))


def per_channel(v: np.ndarray, ndim: int) -> np.ndarray:
    """View a (C,) vector as (1, C, 1, ...) so it broadcasts against an ndim-D input."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def check_input(x, num_features: int | None = None, *, training: bool = False,
                ndims: tuple[int, ...] = (2, 3, 4, 5), name: str = "x") -> np.ndarray:
    """Validate a batch-norm input; raises before anything is computed or updated."""
    x = as_float_array(name, x)
    check_ndim(name, x, ndims, "(N, C, ...)")
    if num_features is not None and x.shape[1] != num_features:
        raise ValueError(f"{name}: expected {num_features} channels in dim 1, "
                         f"got {x.shape[1]} (input shape {tuple(x.shape)})")
    if training and count(x.shape, channel_axes(x.ndim)) <= 1:
        raise ValueError(f"{name}: expected more than 1 value per channel when training, "
                         f"got input size {tuple(x.shape)}")
    return x


def _num_channels(weight, bias) -> int | None:
    """Channel count implied by the affine parameters (None when affine=False)."""
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and (not isinstance(p, np.ndarray) or p.ndim != 1):
            check_param(name, p, (np.size(p),))
    if weight is not None and bias is not None:
        check_param("bias", bias, weight.shape)
    p = weight if weight is not None else bias
    return None if p is None else p.shape[0]


def _affine(x_hat: np.ndarray, weight, bias) -> np.ndarray:
    """y = gamma * x_hat + beta (Alg. 1, line 4), per channel."""
    y = x_hat * per_channel(weight, x_hat.ndim) if weight is not None else x_hat.copy()
    if bias is not None:
        y += per_channel(bias, x_hat.ndim)
    return y


def batch_norm_train(x: np.ndarray, weight: np.ndarray | None = None,
                     bias: np.ndarray | None = None,
                     eps: float = 1e-5) -> tuple[np.ndarray, BatchNormCache]:
    """Training-mode forward with mini-batch statistics (Alg. 1).

    Normalises with the *biased* batch variance, as the paper and PyTorch do; the running
    estimate gets the unbiased one (see :func:`update_running_stats`).
    """
    x = check_input(x, _num_channels(weight, bias), training=True)
    eps = check_eps(eps)
    fast = kernels.for_array(x, "batch")
    if fast is not None:
        return fast.train(x, weight, bias, eps)
    axes = channel_axes(x.ndim)
    norm = normalize(x, axes, eps)
    y = _affine(norm.x_hat, weight, bias)
    cache = BatchNormCache(norm.x_hat, norm.inv_std, weight, norm.mean.ravel(), norm.var.ravel(),
                           count(x.shape, axes), x.dtype)
    return y.astype(x.dtype, copy=False), cache


def eval_scale_shift(running_mean: np.ndarray, running_var: np.ndarray, weight, bias,
                     eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Fold the frozen normalisation and the affine map into one per-channel (scale, shift).

    Alg. 2, line 11: y = gamma / sqrt(Var[x] + eps) * x + (beta - gamma * E[x] / sqrt(Var[x] +
    eps)). Computed in float64 so that folding adds no rounding of its own.
    """
    scale = 1.0 / np.sqrt(running_var.astype(np.float64) + eps)
    if weight is not None:
        scale = scale * weight
    shift = -running_mean * scale
    if bias is not None:
        shift = shift + bias
    return scale, shift


def batch_norm_eval(x: np.ndarray, running_mean: np.ndarray, running_var: np.ndarray,
                    weight: np.ndarray | None = None, bias: np.ndarray | None = None,
                    eps: float = 1e-5) -> np.ndarray:
    """Inference forward: one multiply-add per element with the running statistics (Alg. 2)."""
    if not isinstance(running_mean, np.ndarray) or running_mean.ndim != 1:
        check_param("running_mean", running_mean, (np.size(running_mean),))
    x = check_input(x, running_mean.shape[0])
    for name, p in (("running_var", running_var), ("weight", weight), ("bias", bias)):
        check_param(name, p, running_mean.shape)
    eps = check_eps(eps)
    fast = kernels.for_array(x, "batch")
    if fast is not None:
        return fast.evaluate(x, running_mean, running_var, weight, bias, eps)
    acc = compute_dtype(x.dtype)
    scale, shift = eval_scale_shift(running_mean, running_var, weight, bias, eps)
    y = x * per_channel(scale.astype(acc), x.ndim)
    y += per_channel(shift.astype(acc), x.ndim)
    return y.astype(x.dtype, copy=False)


def batch_norm_backward(dy: np.ndarray, cache: BatchNormCache
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients (dx, dweight, dbias) of the training forward, compact closed form.

    With m values per channel, dbeta = sum(dy), dgamma = sum(dy * x_hat), and

        dx = gamma * inv_std / m * (m * dy - dbeta - x_hat * dgamma)

    (the chain rule of sec. 3 collapsed; the two sums double as the parameter gradients, so
    the whole backward is one reduction pass and one elementwise pass).
    """
    dy = check_grad("dy", dy, cache.saved.shape)
    fast = kernels.for_array(cache.saved, "batch")
    if fast is not None:
        return fast.backward(dy, cache)
    x_hat, inv_std, weight = cache.x_hat, cache.inv_std, cache.weight
    axes = channel_axes(x_hat.ndim)
    dy = dy.astype(x_hat.dtype, copy=False)
    dbias = dy.sum(axis=axes)
    tmp = np.multiply(dy, x_hat)          # the one full-size temporary, reused below
    dweight = tmp.sum(axis=axes)
    scale = inv_std if weight is None else inv_std * per_channel(weight, dy.ndim)
    # dx = scale*dy - (x_hat * scale*dgamma/m + scale*dbeta/m), constants folded per channel
    np.multiply(x_hat, scale * per_channel(dweight / cache.n, dy.ndim), out=tmp)
    tmp += scale * per_channel(dbias / cache.n, dy.ndim)
    dx = np.multiply(dy, scale)
    dx -= tmp
    return dx.astype(cache.dtype, copy=False), dweight, dbias


def averaging_factor(momentum: float | None, num_batches_tracked: int) -> float:
    """Weight of the new batch in the running average.

    ``momentum`` follows PyTorch: running = (1 - momentum) * running + momentum * batch (the
    opposite convention of the textbook's and Keras' 0.9/0.99 "decay"). ``None`` gives the
    cumulative moving average 1/k, where k counts batches including the current one.
    """
    return 1.0 / num_batches_tracked if momentum is None else momentum


def update_running_stats(running_mean: np.ndarray, running_var: np.ndarray,
                         cache: BatchNormCache, factor: float
                         ) -> tuple[np.ndarray, np.ndarray]:
    """New (running_mean, running_var); running_var tracks the UNBIASED batch variance.

    Alg. 2, line 10 uses Var[x] = m/(m-1) * E_B[sigma_B^2] for inference; the running average
    estimates it with the Bessel-corrected variance of each batch.
    """
    unbiased = cache.var * (cache.n / (cache.n - 1))
    new_mean = (1.0 - factor) * running_mean + factor * cache.mean
    new_var = (1.0 - factor) * running_var + factor * unbiased
    # copy=False: both are fresh arrays, so only a dtype change needs a new one
    return (new_mean.astype(running_mean.dtype, copy=False),
            new_var.astype(running_var.dtype, copy=False))
