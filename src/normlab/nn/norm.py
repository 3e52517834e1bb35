"""Normalization modules: thin stateful wrappers over :mod:`normlab.functional`.

Layout follows ``torch/nn/modules/batchnorm.py``: :class:`_NormBase` owns the shared state
(gamma/beta, running statistics, ``num_batches_tracked``); :class:`_BatchNorm` holds the whole
BatchNorm forward/backward, split into the steps later options hook into:

1. check the input (shape, channels, dtype) -- before any state changes;
2. normalise with batch statistics (training, or no running stats) or with the running ones;
3. update the running statistics (training with ``track_running_stats``);
4. cache what ``backward`` needs (in training AND eval, so eval-mode gradients work too).

BatchNorm1d/2d/3d only differ in the accepted input ndim.
"""

from __future__ import annotations

import numbers

import numpy as np

from .. import functional as F
from .._checks import check_eps, check_grad, check_momentum, check_positive_int
from ..functional import batch as FB
from ..functional import group as FG
from .module import Module, Parameter


def _check_flag(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__}")
    return bool(value)


class _NormBase(Module):
    """State shared by BatchNorm and InstanceNorm, with torch's names, defaults and dtypes."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, *, dtype=np.float32):
        super().__init__()
        self.num_features = check_positive_int("num_features", num_features)
        self.eps = check_eps(eps)
        self.momentum = check_momentum(momentum)
        self.affine = _check_flag("affine", affine)
        self.track_running_stats = _check_flag("track_running_stats", track_running_stats)
        dtype = np.dtype(dtype)
        c = self.num_features
        if self.affine:
            self.weight = Parameter(np.ones(c, dtype=dtype))
            self.bias = Parameter(np.zeros(c, dtype=dtype))
        else:
            self.weight = None
            self.bias = None
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(c, dtype=dtype))
            self.register_buffer("running_var", np.ones(c, dtype=dtype))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self._cache = None

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            self.weight.data[...] = 1
            self.bias.data[...] = 0

    def _params(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        if self.affine:
            return self.weight.data, self.bias.data
        return None, None

    def _accumulate(self, dweight: np.ndarray, dbias: np.ndarray) -> None:
        if self.affine:
            self.weight.accumulate(dweight)
            self.bias.accumulate(dbias)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


class _EvalCache:
    """Backward state of the eval-mode map y = x * scale + shift (Alg. 2, line 11)."""

    __slots__ = ("x", "mean", "inv_std", "weight")

    def __init__(self, x, mean, inv_std, weight):
        self.x, self.mean, self.inv_std, self.weight = x, mean, inv_std, weight


def _eval_backward(dy: np.ndarray, cache: _EvalCache
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of the frozen-statistics forward: the statistics are constants here."""
    dy = check_grad("dy", dy, cache.x.shape)
    nd = dy.ndim
    axes = FB.channel_axes(nd)
    inv_std = FB.per_channel(cache.inv_std, nd)
    x_hat = (cache.x - FB.per_channel(cache.mean, nd)) * inv_std
    dbias = dy.sum(axis=axes)
    dweight = (dy * x_hat).sum(axis=axes)
    scale = inv_std if cache.weight is None else inv_std * FB.per_channel(cache.weight, nd)
    dx = dy * scale
    return dx.astype(cache.x.dtype, copy=False), dweight, dbias


def _eval_cache(x: np.ndarray, running_mean, running_var, weight, eps: float) -> _EvalCache:
    inv_std = (1.0 / np.sqrt(running_var.astype(np.float64) + eps)).astype(x.dtype)
    return _EvalCache(x, running_mean.astype(x.dtype), inv_std, weight)


class _BatchNorm(_NormBase):
    """Batch Normalization (Ioffe & Szegedy 2015, Alg. 1 in training, Alg. 2 for inference).

    ``momentum`` follows torch (running = (1-m) running + m batch); ``momentum=None`` is the
    cumulative average over ``num_batches_tracked`` batches. With ``track_running_stats=False``
    the batch statistics are used in eval mode too.
    """

    _ndims: tuple[int, ...] = (2, 3, 4, 5)
    _shape_doc = "(N, C, ...)"

    # step 1 ------------------------------------------------------------------------------
    def _check_input(self, x, training: bool) -> np.ndarray:
        x = F.batch.check_input(x, self.num_features, training=training, ndims=self._ndims)
        return x

    def _use_batch_stats(self) -> bool:
        return self.training or not self.track_running_stats

    # step 3 ------------------------------------------------------------------------------
    def _update_running_stats(self, cache: FB.BatchNormCache) -> None:
        self.num_batches_tracked += 1
        factor = F.averaging_factor(self.momentum, int(self.num_batches_tracked))
        mean, var = F.update_running_stats(self.running_mean, self.running_var, cache, factor)
        self.running_mean[...] = mean
        self.running_var[...] = var

    def forward(self, x: np.ndarray) -> np.ndarray:
        batch_stats = self._use_batch_stats()
        x = self._check_input(x, training=batch_stats)
        weight, bias = self._params()
        if batch_stats:
            y, cache = F.batch_norm_train(x, weight, bias, self.eps)
            if self.training and self.track_running_stats:
                self._update_running_stats(cache)
        else:
            y = F.batch_norm_eval(x, self.running_mean, self.running_var, weight, bias, self.eps)
            cache = _eval_cache(x, self.running_mean, self.running_var, weight, self.eps)
        self._cache = cache
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        cache = self._cache
        if cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        if isinstance(cache, _EvalCache):
            dx, dweight, dbias = _eval_backward(dy, cache)
        else:
            dx, dweight, dbias = F.batch_norm_backward(dy, cache)
        self._accumulate(dweight, dbias)
        return dx


class BatchNorm1d(_BatchNorm):
    """Input (N, C) or (N, C, L); statistics per channel over N (and L)."""

    _ndims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Input (N, C, H, W); per-channel statistics over N, H, W (the paper's conv BN, sec. 3.2)."""

    _ndims = (4,)


class BatchNorm3d(_BatchNorm):
    """Input (N, C, D, H, W)."""

    _ndims = (5,)


class _InstanceNorm(_NormBase):
    """Instance normalization (Ulyanov et al. 2016): GroupNorm with one group per channel.

    torch defaults: affine=False, track_running_stats=False. With running stats, eval mode
    normalises with them (as torch does) and ``momentum=None`` means 0.0 (no update), which is
    what torch's InstanceNorm passes to the functional call. ``num_batches_tracked`` exists for
    state-dict compatibility but, as in torch, is never incremented.
    """

    _ndims: tuple[int, ...] = (3,)

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = False, track_running_stats: bool = False, *, dtype=np.float32):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype=dtype)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = FB.check_input(x, self.num_features, ndims=self._ndims)
        weight, bias = self._params()
        if self.training or not self.track_running_stats:
            y, cache = F.instance_norm_forward(x, weight, bias, self.eps)
            if self.training and self.track_running_stats:
                factor = 0.0 if self.momentum is None else self.momentum
                mean, var = F.instance_running_update(self.running_mean, self.running_var,
                                                      cache, factor)
                self.running_mean[...] = mean
                self.running_var[...] = var
        else:
            y = F.batch_norm_eval(x, self.running_mean, self.running_var, weight, bias, self.eps)
            cache = _eval_cache(x, self.running_mean, self.running_var, weight, self.eps)
        self._cache = cache
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        cache = self._cache
        if cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        if isinstance(cache, _EvalCache):
            dx, dweight, dbias = _eval_backward(dy, cache)
        else:
            dx, dweight, dbias = F.instance_norm_backward(dy, cache)
        self._accumulate(dweight, dbias)
        return dx


class InstanceNorm1d(_InstanceNorm):
    """Input (N, C, L)."""

    _ndims = (3,)


class InstanceNorm2d(_InstanceNorm):
    """Input (N, C, H, W)."""

    _ndims = (4,)


class InstanceNorm3d(_InstanceNorm):
    """Input (N, C, D, H, W)."""

    _ndims = (5,)


class LayerNorm(Module):
    """Layer normalization (Ba et al. 2016) over the trailing ``normalized_shape`` dims."""

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, *, dtype=np.float32):
        super().__init__()
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (normalized_shape,)
        if not isinstance(normalized_shape, (tuple, list)) or not normalized_shape:
            raise TypeError(f"normalized_shape: expected a positive int or a non-empty tuple of "
                            f"them, got {normalized_shape!r}")
        self.normalized_shape = tuple(check_positive_int("normalized_shape", d)
                                      for d in normalized_shape)
        self.eps = check_eps(eps)
        self.elementwise_affine = _check_flag("elementwise_affine", elementwise_affine)
        dtype = np.dtype(dtype)
        if self.elementwise_affine:
            self.weight = Parameter(np.ones(self.normalized_shape, dtype=dtype))
            self.bias = Parameter(np.zeros(self.normalized_shape, dtype=dtype)) if bias else None
        else:
            self.weight = None
            self.bias = None
        self._cache = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        weight = None if self.weight is None else self.weight.data
        bias = None if self.bias is None else self.bias.data
        y, self._cache = F.layer_norm_forward(x, self.normalized_shape, weight, bias, self.eps)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        if self._cache is None:
            raise RuntimeError("LayerNorm.backward called before forward")
        dx, dweight, dbias = F.layer_norm_backward(dy, self._cache)
        if self.weight is not None:
            self.weight.accumulate(dweight)
        if self.bias is not None:
            self.bias.accumulate(dbias)
        return dx

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")


class GroupNorm(Module):
    """Group normalization (Wu & He 2018, eq. 1 with S_i = the sample's channel group)."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5,
                 affine: bool = True, *, dtype=np.float32):
        super().__init__()
        self.num_groups = check_positive_int("num_groups", num_groups)
        self.num_channels = check_positive_int("num_channels", num_channels)
        if self.num_channels % self.num_groups:
            raise ValueError(f"num_groups: expected a divisor of num_channels="
                             f"{self.num_channels}, got {self.num_groups}")
        self.eps = check_eps(eps)
        self.affine = _check_flag("affine", affine)
        dtype = np.dtype(dtype)
        if self.affine:
            self.weight = Parameter(np.ones(self.num_channels, dtype=dtype))
            self.bias = Parameter(np.zeros(self.num_channels, dtype=dtype))
        else:
            self.weight = None
            self.bias = None
        self._cache = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        FG.check_input(x, self.num_channels, self.num_groups)
        weight, bias = (self.weight.data, self.bias.data) if self.affine else (None, None)
        y, self._cache = F.group_norm_forward(x, self.num_groups, weight, bias, self.eps)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        if self._cache is None:
            raise RuntimeError("GroupNorm.backward called before forward")
        dx, dweight, dbias = F.group_norm_backward(dy, self._cache)
        if self.affine:
            self.weight.accumulate(dweight)
            self.bias.accumulate(dbias)
        return dx

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"
