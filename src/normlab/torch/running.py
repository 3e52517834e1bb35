"""Batch norm whose running statistics can be exact, debiased, NaN-safe, masked and frozen.

Drop-in ``torch.nn.BatchNorm1d/2d/3d`` subclasses. With default options they *are* torch's
layers (same forward call, same state dict, loadable into ``torch.nn.BatchNorm*d`` with
``strict=True``); the options only add behaviour, and add a buffer only when they need one.
The estimators are the pure math of :mod:`normlab.functional.running` and the rules that use
them the policy the NumPy engine's BatchNorm shares (:mod:`normlab.functional.policy`); this
file is the torch plumbing around them.

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

import torch
import torch.nn.functional as F
from torch import nn

from ..functional.policy import RunningOptions, check_mask, freeze_all, unfreeze_all
from ..functional.running import check_options
from ._common import CheckedStateMixin, TorchOps, check_batch, check_channels, moments


class _RunningStatsMixin(RunningOptions, CheckedStateMixin):
    """The options above, shared by BatchNorm1d/2d/3d (torch's _BatchNorm does the rest)."""

    _ops = TorchOps

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device=None,
                 dtype=None, *, running_stats: str = "ema", unbiased: str = "running",
                 skip_nonfinite: bool = False, **torch_kwargs) -> None:
        options = check_options(running_stats, unbiased, skip_nonfinite, momentum)
        # torch_kwargs: keyword options of newer torch versions (e.g. bias=), passed through
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device,
                         dtype, **torch_kwargs)
        self._set_options(options)

    def reset_running_stats(self) -> None:
        super().reset_running_stats()
        self._reset_option_counters()

    # -- forward -------------------------------------------------------------------------
    def _is_torch_default(self) -> bool:
        return (self.running_stats == "ema" and self.unbiased == "running"
                and not self.skip_nonfinite)

    def forward(self, input: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        self._check_input_dim(input)
        check_channels(input, self.num_features)
        if mask is not None:
            check_mask(input, mask, torch.Tensor, torch.bool, "bool tensor")
        if mask is None and not self.frozen and self._is_torch_default():
            return super().forward(input)  # torch's own fast path: bit-identical by design
        # (count, C) rows of the real positions: BN of the unpadded concatenation
        x = input.transpose(1, 2)[mask] if mask is not None else input
        # frozen: the running statistics even without buffers (torch's own error then)
        if self.frozen or not self._use_batch_stats():
            y = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                             False, 0.0, self.eps)
        elif mask is None and x.numel() == 0:
            y = self._empty_batch(x)
        else:
            n = check_batch(x, "input" if mask is None else "input (masked)")
            # autograd gives the backward of the rescaled forward (unbiased='both')
            weight, eps, _ = self._forward_affine(n, self.weight, x)
            y = F.batch_norm(x, None, None, weight, self.bias, True, 0.0, eps)
            if self._tracking():
                self._update(x, n)
        if mask is None:
            return y
        out = input.new_zeros(input.shape[0], input.shape[2], input.shape[1])
        out = out.index_put((mask,), y)  # out-of-place: autograd routes dy[mask] back to y
        return out.transpose(1, 2)

    def _empty_batch(self, x: torch.Tensor) -> torch.Tensor:
        """An empty training batch, as torch's default path takes it: an empty output, the
        running statistics unchanged, one more batch in ``num_batches_tracked``."""
        if self._tracking():
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
        return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)

    @torch.no_grad()
    def _update(self, x: torch.Tensor, n: int) -> None:
        """The policy's step from this batch's statistics, accumulated in float32 at least (a
        skipped batch's warning names the frame above this method, as before)."""
        acc = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        mean, var = moments(x.detach().to(acc))
        self._record(mean, var, n, stacklevel=2)

    def extra_repr(self) -> str:
        return ", ".join([super().extra_repr(), *self._option_repr()])


class BatchNorm1d(_RunningStatsMixin, nn.BatchNorm1d):
    """torch.nn.BatchNorm1d plus the running-statistics options; ``mask`` for (N, C, T)."""


class BatchNorm2d(_RunningStatsMixin, nn.BatchNorm2d):
    """torch.nn.BatchNorm2d plus the running-statistics options."""


class BatchNorm3d(_RunningStatsMixin, nn.BatchNorm3d):
    """torch.nn.BatchNorm3d plus the running-statistics options."""


def freeze(model: nn.Module) -> nn.Module:
    """Freeze every running-statistics BN in ``model`` (all are checked before any changes)."""
    return freeze_all(model, _RunningStatsMixin)


def unfreeze(model: nn.Module) -> nn.Module:
    """Undo :func:`freeze` on every running-statistics BN in ``model``."""
    return unfreeze_all(model, _RunningStatsMixin)
