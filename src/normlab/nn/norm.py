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
import warnings
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from .. import functional as F
from .._checks import (
    as_float_array,
    check_eps,
    check_grad,
    check_momentum,
    check_ndim,
    check_positive_int,
)
from ..functional import batch as FB
from ..functional import ghost as FGh
from ..functional import group as FG
from ..functional import running as FR
from ..functional.stats import count
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

    def _may_be_missing(self, name: str, metadata) -> bool:
        """torch's ``_NormBase._load_from_state_dict``: a state dict saved before version 2 of
        the layer (torch < 0.4.1; also torchvision's FrozenBatchNorm2d, hand-made dicts: no
        ``_metadata``) has no ``num_batches_tracked``; the current value is kept."""
        version = metadata.get("version") if isinstance(metadata, Mapping) else None
        return name == "num_batches_tracked" and (version is None or version < 2)

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


class _Scaled(NamedTuple):
    """Forward normalised with s * (biased variance): ``unbiased='both'`` (see _BatchNorm)."""

    inner: FB.BatchNormCache
    s: float


class _Masked(NamedTuple):
    """Forward ran on the (count, C) rows of the real positions of an (N, C, T) input."""

    inner: object
    mask: np.ndarray
    shape: tuple[int, ...]


def _check_mask(x: np.ndarray, mask) -> np.ndarray:
    if x.ndim != 3:
        raise ValueError(f"mask: expected a 3D (N, C, T) input with a mask, got input shape "
                         f"{tuple(x.shape)}")
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
        got = mask.dtype if isinstance(mask, np.ndarray) else type(mask).__name__
        raise TypeError(f"mask: expected a bool numpy.ndarray of shape (N, T), got {got}")
    want = (x.shape[0], x.shape[2])
    if mask.shape != want:
        raise ValueError(f"mask: expected shape {want} (N, T), got {tuple(mask.shape)}")
    return mask


def _rows(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(count, C) real positions of (N, C, T): BN of the unpadded concatenation."""
    return x.transpose(0, 2, 1)[mask]


def _scatter(rows: np.ndarray, mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`_rows`, zeros at the padded positions."""
    out = np.zeros((shape[0], shape[2], shape[1]), dtype=rows.dtype)
    out[mask] = rows
    return out.transpose(0, 2, 1)


class _BatchNorm(_NormBase):
    """Batch Normalization (Ioffe & Szegedy 2015, Alg. 1 in training, Alg. 2 for inference).

    ``momentum`` follows torch (running = (1-m) running + m batch); ``momentum=None`` is the
    cumulative average over ``num_batches_tracked`` batches. With ``track_running_stats=False``
    (no running buffers) the batch statistics are used in eval mode too; switched off after
    construction, as in torch, eval still uses the buffers and training leaves them alone.

    Keyword options (defaults = torch's behaviour; the estimators are
    :mod:`normlab.functional.running`), with m values per channel and sigma^2 the biased batch
    variance:

    * ``running_stats``: ``"ema"`` (torch), ``"cumulative"`` (the mean of all batch statistics,
      torch's momentum=None), ``"exact"`` (mean/variance of every activation since the last
      reset, Chan merge; buffer ``num_samples_tracked``), ``"ema_debiased"`` (EMA divided by
      1 - (1 - m)^t, Adam-style).
    * ``unbiased``: ``"running"`` (torch: forward sigma^2, running_var m/(m-1) sigma^2),
      ``"both"`` (both m/(m-1) sigma^2), ``"none"`` (both sigma^2).
    * ``skip_nonfinite``: a batch with NaN/inf statistics leaves the running statistics alone,
      counts itself in the buffer ``num_batches_skipped`` and warns once.
    * ``virtual_batch_size``: ghost BN in training (Hoffer et al. 2017, sec. 4; the splitting
      of :func:`normlab.functional.ghost.virtual_splits`); eval is unchanged.
    * ``forward(x, mask)``: (N, C, T) input with an (N, T) bool mask of real positions; padded
      ones contribute nothing (statistics, running statistics, gradients) and output 0.
    * ``freeze()`` / ``unfreeze()``: inference behaviour even in training mode.
    """

    _ndims: tuple[int, ...] = (2, 3, 4, 5)
    _shape_doc = "(N, C, ...)"

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, *, dtype=np.float32,
                 running_stats: str = "ema", unbiased: str = "running",
                 skip_nonfinite: bool = False, virtual_batch_size: int | None = None):
        options = FR.check_options(running_stats, unbiased, skip_nonfinite, momentum)
        if virtual_batch_size is not None:
            virtual_batch_size = check_positive_int("virtual_batch_size", virtual_batch_size)
            if unbiased != "running":
                raise ValueError(f"unbiased: expected 'running' with virtual_batch_size (ghost "
                                 f"BN), got {unbiased!r}")
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype=dtype)
        self.running_stats, self.unbiased, self.skip_nonfinite = options
        self.virtual_batch_size = virtual_batch_size
        if self.track_running_stats and self.running_stats == "exact":
            self.register_buffer("num_samples_tracked", np.array(0, dtype=np.int64))
        if self.track_running_stats and self.skip_nonfinite:
            self.register_buffer("num_batches_skipped", np.array(0, dtype=np.int64))
        self.frozen = False
        self._warned_nonfinite = False

    def reset_running_stats(self) -> None:
        super().reset_running_stats()
        for name in ("num_samples_tracked", "num_batches_skipped"):
            if name in self._buffers:
                self._buffers[name][...] = 0

    # -- freezing --------------------------------------------------------------------------
    def freeze(self) -> _BatchNorm:
        """Inference behaviour (running statistics, no updates) until :meth:`unfreeze`, whatever
        ``train()`` says; the state dict is untouched."""
        if self.running_mean is None:
            raise ValueError(f"{self._label()}: expected track_running_stats=True to freeze, "
                             f"got track_running_stats=False (no running statistics)")
        self.frozen = True
        return self

    def unfreeze(self) -> _BatchNorm:
        self.frozen = False
        return self

    def _label(self) -> str:
        return f"{type(self).__name__}({self.num_features})"

    # step 1 ------------------------------------------------------------------------------
    def _check_input(self, x, training: bool) -> np.ndarray:
        x = F.batch.check_input(x, self.num_features, training=training, ndims=self._ndims)
        return x

    def _use_batch_stats(self) -> bool:
        # torch's _BatchNorm.forward: eval normalises with the running statistics whenever the
        # buffers exist, even if track_running_stats was switched off after construction
        return (self.training and not self.frozen) or self.running_mean is None

    def _tracking(self) -> bool:
        """Whether a training forward updates the running statistics (torch: only when
        tracking AND the buffers exist)."""
        return self.training and self.track_running_stats and self.running_mean is not None

    # step 3 ------------------------------------------------------------------------------
    def _update_running_stats(self, cache) -> None:
        """One running-statistics step from a BatchNormCache (or a ghost GhostCache)."""
        ghost = isinstance(cache, FGh.GhostCache)
        if ghost:
            mean, var = FGh.ghost_batch_stats(cache)
        else:
            mean, var = cache.mean, cache.var
        if self.skip_nonfinite and not FR.stats_are_finite(mean, var):
            self.num_batches_skipped += 1
            if not self._warned_nonfinite:
                self._warned_nonfinite = True
                warnings.warn(f"{self._label()}: batch statistics are not finite (NaN/inf); "
                              f"running statistics left unchanged (skip_nonfinite=True). "
                              f"Further skips are counted in num_batches_skipped.",
                              RuntimeWarning, stacklevel=3)
            return
        self.num_batches_tracked += 1
        if self.running_stats == "exact":
            self._merge_exact(cache.caches if ghost else [cache])
            return
        factor = FR.running_factor(self.running_stats, self.momentum,
                                   int(self.num_batches_tracked))
        if ghost:
            mean, var = FGh.ghost_running_update(self.running_mean, self.running_var, cache,
                                                 factor)
        elif self.unbiased == "none":   # the biased variance the forward used
            mean = FR.blend(self.running_mean, cache.mean, factor)
            var = FR.blend(self.running_var, cache.var, factor)
        else:
            mean, var = F.update_running_stats(self.running_mean, self.running_var, cache,
                                               factor)
        self.running_mean[...] = mean
        self.running_var[...] = var

    def _merge_exact(self, caches) -> None:
        """Chan-merge each (virtual) batch, in float64 whatever the buffers' dtype."""
        count = float(self.num_samples_tracked)
        mean = self.running_mean.astype(np.float64)
        var = self.running_var.astype(np.float64)
        for c in caches:
            count, mean, var = FR.exact_update(count, mean, var, float(c.n), c.mean, c.var,
                                               self.unbiased)
        self.num_samples_tracked[...] = int(count)
        self.running_mean[...] = mean
        self.running_var[...] = var

    # step 2 ------------------------------------------------------------------------------
    def _train_forward(self, x: np.ndarray, weight, bias):
        if self.virtual_batch_size is not None and self.training:   # ghost BN is train-only
            return F.ghost_batch_norm_train(x, self.virtual_batch_size, weight, bias, self.eps)
        n = count(x.shape, FB.channel_axes(x.ndim))
        s = FR.forward_var_scale(self.unbiased, n)
        if s == 1.0:
            return F.batch_norm_train(x, weight, bias, self.eps)
        # w (x - mu) / sqrt(s var + eps) = (w / sqrt(s)) (x - mu) / sqrt(var + eps / s): plain
        # BN with a rescaled gamma and eps, so the (kernel) forward/backward are reused as-is
        gamma = np.ones(self.num_features, x.dtype) if weight is None else weight
        y, cache = F.batch_norm_train(x, (gamma / np.sqrt(s)).astype(gamma.dtype), bias,
                                      self.eps / s)
        return y, _Scaled(cache, s)

    def forward(self, x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        batch_stats = self._use_batch_stats()
        x = self._check_input(x, training=batch_stats and mask is None)
        shape = x.shape
        if mask is not None:
            mask = _check_mask(x, mask)
            if self.virtual_batch_size is not None:
                raise ValueError("mask: expected no mask with virtual_batch_size (ghost BN), "
                                 "got a mask")
            x = _rows(x, mask)
            if batch_stats:
                F.batch.check_input(x, training=True, name="x (masked positions)")
        weight, bias = self._params()
        if batch_stats:
            y, cache = self._train_forward(x, weight, bias)
            if self._tracking():
                self._update_running_stats(cache.inner if isinstance(cache, _Scaled) else cache)
        else:
            y = F.batch_norm_eval(x, self.running_mean, self.running_var, weight, bias, self.eps)
            cache = _eval_cache(x, self.running_mean, self.running_var, weight, self.eps)
        if mask is not None:
            y = _scatter(y, mask, shape)
            cache = _Masked(cache, mask, shape)
        self._cache = cache
        return y

    def _backward(self, dy: np.ndarray, cache):
        if isinstance(cache, _Masked):
            dy = check_grad("dy", dy, cache.shape)
            dx, dweight, dbias = self._backward(_rows(dy, cache.mask), cache.inner)
            return _scatter(dx, cache.mask, cache.shape), dweight, dbias
        if isinstance(cache, _EvalCache):
            return _eval_backward(dy, cache)
        if isinstance(cache, FGh.GhostCache):
            return F.ghost_batch_norm_backward(dy, cache)
        if isinstance(cache, _Scaled):
            dx, dweight, dbias = F.batch_norm_backward(dy, cache.inner)
            return dx, dweight / np.sqrt(cache.s), dbias   # d/dgamma of gamma / sqrt(s)
        return F.batch_norm_backward(dy, cache)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        cache = self._cache
        if cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        dx, dweight, dbias = self._backward(dy, cache)
        self._accumulate(dweight, dbias)
        return dx

    def extra_repr(self) -> str:
        extra = [f"{k}={getattr(self, k)!r}" for k, v in FR.DEFAULTS.items()
                 if getattr(self, k) != v]
        if self.virtual_batch_size is not None:
            extra.append(f"virtual_batch_size={self.virtual_batch_size}")
        return ", ".join([super().extra_repr(), *extra])


def freeze(model: Module) -> Module:
    """Freeze every batch norm of ``model`` (all are checked before any is frozen)."""
    return FR.freeze_all(model, _BatchNorm)


def unfreeze(model: Module) -> Module:
    return FR.unfreeze_all(model, _BatchNorm)


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
        x, unbatched = self._batched(x)
        weight, bias = self._params()
        if self.training or not self.track_running_stats:
            y, cache = F.instance_norm_forward(x, weight, bias, self.eps)
            if self.training and self.track_running_stats and self.running_mean is not None:
                factor = 0.0 if self.momentum is None else self.momentum
                mean, var = F.instance_running_update(self.running_mean, self.running_var,
                                                      cache, factor)
                self.running_mean[...] = mean
                self.running_var[...] = var
        else:
            y = F.batch_norm_eval(x, self.running_mean, self.running_var, weight, bias, self.eps)
            cache = _eval_cache(x, self.running_mean, self.running_var, weight, self.eps)
        self._cache = _Unbatched(cache, x.shape[1:]) if unbatched else cache
        return y[0] if unbatched else y

    def _batched(self, x) -> tuple[np.ndarray, bool]:
        """(x as a batch, whether it came unbatched): like torch, an input one dim short of the
        batched layout -- (C, L), (C, H, W), (C, D, H, W) -- is one sample."""
        x = as_float_array("x", x)
        check_ndim("x", x, (self._ndims[0] - 1, self._ndims[0]), "(N, C, ...) or (C, ...)")
        unbatched = x.ndim == self._ndims[0] - 1
        if unbatched and x.shape[0] != self.num_features:
            raise ValueError(f"x: expected {self.num_features} channels in dim 0 of an unbatched "
                             f"input, got {x.shape[0]} (input shape {tuple(x.shape)})")
        x = x[None] if unbatched else x
        return FB.check_input(x, self.num_features, ndims=self._ndims), unbatched

    def backward(self, dy: np.ndarray) -> np.ndarray:
        cache = self._cache
        if cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        unbatched = isinstance(cache, _Unbatched)
        if unbatched:
            dy = check_grad("dy", dy, cache.shape)[None]
            cache = cache.inner
        if isinstance(cache, _EvalCache):
            dx, dweight, dbias = _eval_backward(dy, cache)
        else:
            dx, dweight, dbias = F.instance_norm_backward(dy, cache)
        self._accumulate(dweight, dbias)
        return dx[0] if unbatched else dx


class _Unbatched(NamedTuple):
    """The cache of a forward on one unbatched sample (run as a batch of one)."""

    inner: object
    shape: tuple[int, ...]   # the sample's own shape


class InstanceNorm1d(_InstanceNorm):
    """Input (N, C, L) or unbatched (C, L)."""

    _ndims = (3,)


class InstanceNorm2d(_InstanceNorm):
    """Input (N, C, H, W) or unbatched (C, H, W)."""

    _ndims = (4,)


class InstanceNorm3d(_InstanceNorm):
    """Input (N, C, D, H, W) or unbatched (C, D, H, W)."""

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
