"""Batch normalization for the NumPy engine (Ioffe & Szegedy 2015, Alg. 1 in training, Alg. 2
for inference), laid out as ``torch/nn/modules/batchnorm.py``: the state is
:class:`~.norm_base.NormBase`'s, the running-statistics rules are the policy shared with
``normlab.torch`` (:mod:`normlab.functional.policy`), and BatchNorm1d/2d/3d only differ in
the accepted input ndim.
"""

from __future__ import annotations

import numpy as np

from .. import functional as F
from .._checks import check_positive_int
from ..core.shapes import channel_axes, count
from ..functional.batch import (
    check_count,
    check_input,
    eval_affine_checked,
    eval_checked,
    train_checked,
)
from ..functional.ghost import GhostCache, ghost_batch_stats, ghost_train_checked
from ..functional.policy import NumpyOps, RunningOptions, check_mask, freeze_all, unfreeze_all
from ..functional.running import check_options
from .module import Module
from .norm_base import NormBase
from .saved import Eval, Masked, Saved, Scaled, rows, scatter

# A skipped batch's warning names the frame that called ``forward`` (Module.__call__ for
# ``layer(x)``): the recording helpers run in _normalize, so that frame is 3 above them
_RECORD_DEPTH = 3


class BatchNormBase(RunningOptions, NormBase):
    """Batch Normalization; the base of BatchNorm1d/2d/3d and BatchRenorm1d/2d.

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

    input_ndims: tuple[int, ...] = (2, 3, 4, 5)   # the input ndims the layer accepts
    _ops = NumpyOps

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, *, dtype=np.float32,
                 running_stats: str = "ema", unbiased: str = "running",
                 skip_nonfinite: bool = False, virtual_batch_size: int | None = None):
        options = check_options(running_stats, unbiased, skip_nonfinite, momentum)
        if virtual_batch_size is not None:
            virtual_batch_size = check_positive_int("virtual_batch_size", virtual_batch_size)
            if unbiased != "running":
                raise ValueError(f"unbiased: expected 'running' with virtual_batch_size (ghost "
                                 f"BN), got {unbiased!r}")
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype=dtype)
        self._set_options(options)
        self.virtual_batch_size = virtual_batch_size

    def reset_running_stats(self) -> None:
        super().reset_running_stats()
        self._reset_option_counters()

    def forward(self, x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """1. check the input (and mask) before any state changes; 2. normalise with the batch
        statistics (training, or no running ones) or the running ones; 3. in training, update
        the running statistics; 4. keep what ``backward`` needs (eval-mode gradients too)."""
        batch_stats = self._use_batch_stats()
        x = self._check_input(x, training=batch_stats and mask is None)
        if mask is None:
            y, self._cache = self._normalize(x, batch_stats)
            return y
        mask = check_mask(x, mask, np.ndarray, np.bool_, "bool numpy.ndarray")
        if self.virtual_batch_size is not None:
            raise ValueError("mask: expected no mask with virtual_batch_size (ghost BN), "
                             "got a mask")
        real = rows(x, mask)
        if batch_stats:
            check_count(real.shape, "x (masked positions)")
        y, saved = self._normalize(real, batch_stats)
        self._cache = Masked(saved, mask, x.shape)
        return scatter(y, mask, x.shape)

    def eval_affine(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The per-channel (scale, shift), float64, of the map y = x * scale + shift that
        ``forward(x)`` applies now (Alg. 2, line 11), after the forward's checks of ``x``; None
        where the forward normalises with batch statistics (training and not frozen, or no
        running buffers)."""
        if self._use_batch_stats():
            return None
        self._check_input(x, training=False)
        weight, bias = self._params()
        return eval_affine_checked(self.running_mean, self.running_var, weight, bias, self.eps)

    def _check_input(self, x, training: bool) -> np.ndarray:
        return check_input(x, self.num_features, training=training, ndims=self.input_ndims)

    def _normalize(self, x: np.ndarray, batch_stats: bool):
        """Steps 2-4 on a checked (N, C, ...) input: (y, what backward needs)."""
        weight, bias = self._params()
        if not batch_stats:
            y = eval_checked(x, self.running_mean, self.running_var, weight, bias, self.eps)
            return y, Eval(x, self.running_mean, self.running_var, weight, self.eps)
        if self.virtual_batch_size is not None and self.training:   # ghost BN is train-only
            y, cache = ghost_train_checked(x, self.virtual_batch_size, weight, bias, self.eps)
            if self._tracking():
                self._record_virtual(cache, _RECORD_DEPTH)
            return y, Saved(F.ghost_batch_norm_backward, cache)
        weight, eps, s = self._forward_affine(count(x.shape, channel_axes(x.ndim)), weight, x)
        y, cache = train_checked(x, weight, bias, eps)
        if self._tracking():
            self._record_batch(cache, _RECORD_DEPTH)
        return y, (Saved(F.batch_norm_backward, cache) if s == 1.0 else Scaled(cache, s))

    def _record_batch(self, cache, stacklevel: int) -> None:
        """One running-statistics step from a batch-norm cache's (mean, biased var, count); a
        warning names the frame ``stacklevel`` levels above this method."""
        self._record(cache.mean, cache.var, cache.n, stacklevel=stacklevel + 1)

    def _record_virtual(self, cache: GhostCache, stacklevel: int) -> None:
        """Ghost BN's one step per batch: toward the count-weighted virtual-batch statistics
        (``exact`` merges the virtual batches one by one)."""
        mean, var = ghost_batch_stats(cache)
        self._record(mean, var, parts=[(c.n, c.mean, c.var) for c in cache.caches],
                     stacklevel=stacklevel + 1)

    def extra_repr(self) -> str:
        extra = self._option_repr()
        if self.virtual_batch_size is not None:
            extra.append(f"virtual_batch_size={self.virtual_batch_size}")
        return ", ".join([super().extra_repr(), *extra])


def freeze(model: Module) -> Module:
    """Freeze every batch norm of ``model`` (all are checked before any is frozen)."""
    return freeze_all(model, BatchNormBase)


def unfreeze(model: Module) -> Module:
    """Undo :func:`freeze` on every batch norm of ``model``: training mode updates the running
    statistics again."""
    return unfreeze_all(model, BatchNormBase)


class BatchNorm1d(BatchNormBase):
    """Input (N, C) or (N, C, L); statistics per channel over N (and L)."""

    input_ndims = (2, 3)


class BatchNorm2d(BatchNormBase):
    """Input (N, C, H, W); per-channel statistics over N, H, W (the paper's conv BN, sec. 3.2)."""

    input_ndims = (4,)


class BatchNorm3d(BatchNormBase):
    """Input (N, C, D, H, W)."""

    input_ndims = (5,)
