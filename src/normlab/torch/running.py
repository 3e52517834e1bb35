"""Batch norm whose running statistics can be exact, debiased, NaN-safe, masked and frozen.

Drop-in ``torch.nn.BatchNorm1d/2d/3d`` subclasses. With default options they *are* torch's
layers (same forward call, same state dict, loadable into ``torch.nn.BatchNorm*d`` with
``strict=True``); the options only add behaviour, and add a buffer only when they need one.
The estimators are the pure math of :mod:`normlab.functional.running`; this file is the torch
plumbing around them.

Options (keyword-only):

* ``running_stats`` -- how the inference statistics estimate the population ones (Ioffe &
  Szegedy 2015, Alg. 2, line 10), after t batches with batch statistics (mu_t, v_t):

  - ``"ema"`` (default, torch): r_t = (1 - m) r_{t-1} + m v_t; ``momentum=None`` = cumulative;
  - ``"cumulative"``: r_t = mean of v_1..v_t (torch's ``momentum=None``), whatever the momentum;
  - ``"exact"``: the mean and variance of every activation seen since the last reset, merged
    batch by batch (Chan et al. 1979) -- independent of batch sizes and order. Adds the buffer
    ``num_samples_tracked`` (values per channel seen);
  - ``"ema_debiased"``: the EMA with Adam's bias correction, r_t = r_t^raw / (1 - (1 - m)^t)
    for the raw EMA started at zero; the first batch is taken exactly.

* ``unbiased`` -- which variance is biased (divide by m) and which Bessel-corrected
  (divide by m - 1), with m values per channel and sigma^2 the biased batch variance:

  - ``"running"`` (default, torch): forward uses sigma^2, running_var tracks m/(m-1) sigma^2;
  - ``"both"``: both use m/(m-1) sigma^2, y = (x - mu) / sqrt(m/(m-1) sigma^2 + eps);
    the backward becomes dx = inv_std (dx_hat - mean(dx_hat) - s x_hat mean(dx_hat x_hat)),
    s = m/(m-1);
  - ``"none"``: both use sigma^2.

* ``skip_nonfinite`` -- a batch whose statistics hold NaN/inf (an fp16 overflow, a bad
  sample) leaves the running statistics and ``num_batches_tracked`` untouched and increments
  the buffer ``num_batches_skipped``; the first skip of each layer warns.

* ``forward(x, mask=None)`` -- for (N, C, T) sequences, ``mask`` (N, T) bool, True at real
  positions: padded positions contribute nothing to the batch statistics, the running statistics
  or the gradients, and their outputs are 0.

* ``freeze()`` / ``unfreeze()`` -- a frozen layer behaves as in eval mode (running statistics,
  no updates) even after ``model.train()``; ``self.training`` still reports the requested mode.
  :func:`freeze` / :func:`unfreeze` apply to every such layer of a model.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ..functional import running as R
from ._common import CheckedStateMixin, check_batch, check_channels, reduce_dims


class _RunningStatsMixin(CheckedStateMixin):
    """The options above, shared by BatchNorm1d/2d/3d (torch's _BatchNorm does the rest)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device=None,
                 dtype=None, *, running_stats: str = "ema", unbiased: str = "running",
                 skip_nonfinite: bool = False, **torch_kwargs) -> None:
        options = R.check_options(running_stats, unbiased, skip_nonfinite, momentum)
        # torch_kwargs: keyword options of newer torch versions (e.g. bias=), passed through
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device,
                         dtype, **torch_kwargs)
        self.running_stats, self.unbiased, self.skip_nonfinite = options
        if self.track_running_stats and self.running_stats == "exact":
            self.register_buffer("num_samples_tracked",
                                 torch.tensor(0, dtype=torch.long, device=device))
        if self.track_running_stats and self.skip_nonfinite:
            self.register_buffer("num_batches_skipped",
                                 torch.tensor(0, dtype=torch.long, device=device))
        self.frozen = False
        self._warned_nonfinite = False

    # -- freezing ------------------------------------------------------------------------
    def freeze(self):
        """Inference behaviour (running statistics, no updates) until :meth:`unfreeze`."""
        if self.running_mean is None:
            raise ValueError(f"{self._label()}: expected track_running_stats=True to freeze, "
                             f"got track_running_stats=False (no running statistics)")
        self.frozen = True
        return self

    def unfreeze(self):
        self.frozen = False
        return self

    def reset_running_stats(self) -> None:
        super().reset_running_stats()
        if getattr(self, "num_samples_tracked", None) is not None:
            self.num_samples_tracked.zero_()
        if getattr(self, "num_batches_skipped", None) is not None:
            self.num_batches_skipped.zero_()

    # -- forward -------------------------------------------------------------------------
    def _is_torch_default(self) -> bool:
        return (self.running_stats == "ema" and self.unbiased == "running"
                and not self.skip_nonfinite)

    def forward(self, input: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        self._check_input_dim(input)
        check_channels(input, self.num_features)
        if mask is not None:
            _check_mask(input, mask)
        if mask is None and not self.frozen and self._is_torch_default():
            return super().forward(input)  # torch's own fast path: bit-identical by design
        # (count, C) rows of the real positions: BN of the unpadded concatenation
        x = input.transpose(1, 2)[mask] if mask is not None else input
        if self.frozen or (not self.training and self.running_mean is not None):
            y = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                             False, 0.0, self.eps)
        elif mask is None and x.numel() == 0:
            y = self._empty_batch(x)
        else:
            n = check_batch(x, "input" if mask is None else "input (masked)")
            s = R.forward_var_scale(self.unbiased, n)
            # y = w (x - mu) / sqrt(s var + eps) = (w / sqrt(s)) (x - mu) / sqrt(var + eps / s):
            # torch's fused kernel with rescaled weight and eps; autograd gives the backward
            weight = self.weight
            if s != 1.0:
                weight = (torch.ones(self.num_features, dtype=x.dtype, device=x.device)
                          if weight is None else weight) / math.sqrt(s)
            y = F.batch_norm(x, None, None, weight, self.bias, True, 0.0, self.eps / s)
            if self._tracking():
                self._update(x, n)
        if mask is None:
            return y
        out = input.new_zeros(input.shape[0], input.shape[2], input.shape[1])
        out = out.index_put((mask,), y)  # out-of-place: autograd routes dy[mask] back to y
        return out.transpose(1, 2)

    def _tracking(self) -> bool:
        """torch: a training forward updates the buffers only when tracking and they exist."""
        return self.training and self.track_running_stats and self.running_mean is not None

    def _empty_batch(self, x: torch.Tensor) -> torch.Tensor:
        """An empty training batch, as torch's default path takes it: an empty output, the
        running statistics unchanged, one more batch in ``num_batches_tracked``."""
        if self._tracking():
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
        return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)

    @torch.no_grad()
    def _update(self, x: torch.Tensor, n: int) -> None:
        acc = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        var, mean = torch.var_mean(x.detach().to(acc), dim=reduce_dims(x), correction=0)
        if not bool(torch.isfinite(mean).all() and torch.isfinite(var).all()):
            if self.skip_nonfinite:
                self.num_batches_skipped.add_(1)
                if not self._warned_nonfinite:
                    self._warned_nonfinite = True
                    warnings.warn(f"{self._label()}: batch statistics are not finite (NaN/inf); "
                                  f"running statistics left unchanged (skip_nonfinite=True). "
                                  f"Further skips are counted in num_batches_skipped.",
                                  RuntimeWarning, stacklevel=2)
                return
        self.num_batches_tracked.add_(1)
        rm, rv = self.running_mean, self.running_var
        if self.running_stats == "exact":
            count, new_mean, new_var = R.exact_update(
                float(self.num_samples_tracked), rm.to(acc), rv.to(acc), float(n), mean, var,
                self.unbiased)
            self.num_samples_tracked.fill_(int(count))
            rm.copy_(new_mean)
            rv.copy_(new_var)
            return
        f = R.running_factor(self.running_stats, self.momentum, int(self.num_batches_tracked))
        rm.mul_(1 - f).add_(mean.to(rm.dtype), alpha=f)
        rv.mul_(1 - f).add_(R.running_var_target(var, n, self.unbiased).to(rv.dtype), alpha=f)

    def _label(self) -> str:
        return f"{type(self).__name__}({self.num_features})"

    def extra_repr(self) -> str:
        extra = [f"{k}={getattr(self, k)!r}" for k, v in R.DEFAULTS.items()
                 if getattr(self, k) != v]
        return ", ".join([super().extra_repr(), *extra])


def _check_mask(x: torch.Tensor, mask: torch.Tensor) -> None:
    if x.dim() != 3:
        raise ValueError(f"mask: expected a 3D (N, C, T) input with a mask, got input shape "
                         f"{tuple(x.shape)}")
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise TypeError(f"mask: expected a bool tensor of shape (N, T), got {got}")
    want = (x.shape[0], x.shape[2])
    if tuple(mask.shape) != want:
        raise ValueError(f"mask: expected shape {want} (N, T), got {tuple(mask.shape)}")


class BatchNorm1d(_RunningStatsMixin, nn.BatchNorm1d):
    """torch.nn.BatchNorm1d plus the running-statistics options; ``mask`` for (N, C, T)."""


class BatchNorm2d(_RunningStatsMixin, nn.BatchNorm2d):
    """torch.nn.BatchNorm2d plus the running-statistics options."""


class BatchNorm3d(_RunningStatsMixin, nn.BatchNorm3d):
    """torch.nn.BatchNorm3d plus the running-statistics options."""


def freeze(model: nn.Module) -> nn.Module:
    """Freeze every running-statistics BN in ``model`` (all are checked before any changes)."""
    return R.freeze_all(model, _RunningStatsMixin)


def unfreeze(model: nn.Module) -> nn.Module:
    return R.unfreeze_all(model, _RunningStatsMixin)
