"""Batch normalization: training forward, eval forward, backward, running statistics.

Ioffe & Szegedy 2015, "Batch Normalization: Accelerating Deep Network Training by Reducing
Internal Covariate Shift". Statistics are per channel over every axis but C (sec. 3.2: for
convolutions the mini-batch is all N*H*W positions of a feature map), matching torch.nn.

Each call validates its arguments, then hands them to the backend :mod:`.backend` picks (the
numba kernels or the NumPy reference, :mod:`normlab.reference.batch`). The input ``x`` is
checked once, where it enters: callers that checked it already (the nn layers, ghost and renorm)
call :func:`train_checked` / :func:`eval_checked`, which check everything but ``x``.
"""

from __future__ import annotations

import numpy as np

from .._checks import as_float_array, check_eps, check_grad, check_ndim, check_param
from ..core.caches import BatchNormCache
from ..core.shapes import channel_axes, count, per_channel
from . import backend
from .running import averaging_factor, blend

__all__ = ["BatchNormCache", "affine_channels", "averaging_factor", "batch_norm_backward",
           "batch_norm_eval", "batch_norm_train", "channel_axes", "check_count", "check_input",
           "eval_checked", "eval_scale_shift", "per_channel", "train_checked",
           "update_running_stats"]


def check_input(x, num_features: int | None = None, *, training: bool = False,
                ndims: tuple[int, ...] = (2, 3, 4, 5), name: str = "x") -> np.ndarray:
    """Validate a batch-norm input; raises before anything is computed or updated."""
    x = as_float_array(name, x)
    check_ndim(name, x, ndims, "(N, C, ...)")
    if num_features is not None and x.shape[1] != num_features:
        raise ValueError(f"{name}: expected {num_features} channels in dim 1, "
                         f"got {x.shape[1]} (input shape {tuple(x.shape)})")
    if training:
        check_count(x.shape, name)
    return x


def check_count(shape: tuple[int, ...], name: str = "x") -> None:
    """Training needs more than one value per channel: a batch variance (sec. 3)."""
    if count(shape, channel_axes(len(shape))) <= 1:
        raise ValueError(f"{name}: expected more than 1 value per channel when training, "
                         f"got input size {tuple(shape)}")


def affine_channels(weight, bias) -> int | None:
    """Channel count implied by the affine parameters (None when affine=False)."""
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and (not isinstance(p, np.ndarray) or p.ndim != 1):
            check_param(name, p, (np.size(p),))
    if weight is not None and bias is not None:
        check_param("bias", bias, weight.shape)
    p = weight if weight is not None else bias
    return None if p is None else p.shape[0]


def batch_norm_train(x: np.ndarray, weight: np.ndarray | None = None,
                     bias: np.ndarray | None = None,
                     eps: float = 1e-5) -> tuple[np.ndarray, BatchNormCache]:
    """Training-mode forward with mini-batch statistics (Alg. 1).

    Normalises with the *biased* batch variance, as the paper and PyTorch do; the running
    estimate gets the unbiased one (see :func:`update_running_stats`).
    """
    x = check_input(x, affine_channels(weight, bias), training=True)
    return train_checked(x, weight, bias, eps)


def train_checked(x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None,
                  eps: float) -> tuple[np.ndarray, BatchNormCache]:
    """:func:`batch_norm_train` of an ``x`` its caller has checked (:func:`check_input`, with
    ``training=True``, against the parameters' channels)."""
    eps = check_eps(eps)
    return backend.for_array(x, "batch").train(x, weight, bias, eps)


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
    _check_mean(running_mean)
    x = check_input(x, running_mean.shape[0])
    return _evaluate(x, running_mean, running_var, weight, bias, eps)


def eval_checked(x: np.ndarray, running_mean: np.ndarray, running_var: np.ndarray,
                 weight: np.ndarray | None, bias: np.ndarray | None, eps: float) -> np.ndarray:
    """:func:`batch_norm_eval` of an ``x`` its caller has checked (:func:`check_input`, against
    the running statistics' channels)."""
    return _evaluate(x, running_mean, running_var, weight, bias, eps)


def _check_mean(running_mean) -> None:
    if not isinstance(running_mean, np.ndarray) or running_mean.ndim != 1:
        check_param("running_mean", running_mean, (np.size(running_mean),))


def _evaluate(x, running_mean, running_var, weight, bias, eps) -> np.ndarray:
    scale, shift = eval_affine_checked(running_mean, running_var, weight, bias, eps)
    return backend.for_array(x, "batch").evaluate(x, scale, shift)


def eval_affine_checked(running_mean: np.ndarray, running_var: np.ndarray, weight, bias,
                        eps: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`eval_scale_shift` after checking the buffers, parameters and eps against
    ``running_mean`` (a 1-D array): the (scale, shift) the eval forward applies."""
    _check_mean(running_mean)
    for name, p in (("running_var", running_var), ("weight", weight), ("bias", bias)):
        check_param(name, p, running_mean.shape)
    return eval_scale_shift(running_mean, running_var, weight, bias, check_eps(eps))


def batch_norm_backward(dy: np.ndarray, cache: BatchNormCache
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients (dx, dweight, dbias) of the training forward, compact closed form.

    With m values per channel, dbeta = sum(dy), dgamma = sum(dy * x_hat), and

        dx = gamma * inv_std / m * (m * dy - dbeta - x_hat * dgamma)

    (the chain rule of sec. 3 collapsed; the two sums double as the parameter gradients, so
    the whole backward is one reduction pass and one elementwise pass).
    """
    dy = check_grad("dy", dy, cache.saved.shape)
    return backend.for_cache(cache, "batch").backward(dy, cache)


def update_running_stats(running_mean: np.ndarray, running_var: np.ndarray,
                         cache: BatchNormCache, factor: float
                         ) -> tuple[np.ndarray, np.ndarray]:
    """New (running_mean, running_var); running_var tracks the UNBIASED batch variance.

    Alg. 2, line 10 uses Var[x] = m/(m-1) * E_B[sigma_B^2] for inference; the running average
    estimates it with the Bessel-corrected variance of each batch.
    """
    unbiased = cache.var * (cache.n / (cache.n - 1))
    return blend(running_mean, cache.mean, factor), blend(running_var, unbiased, factor)
