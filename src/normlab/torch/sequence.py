"""Batch norm for sequences: sequence-wise and per-time-step (recurrent) statistics.

* :class:`SequenceBatchNorm` -- statistics over batch x time per feature (Laurent et al. 2016,
  "Batch normalized recurrent neural networks", sec. 4: "sequence-wise" normalisation).
* :class:`RecurrentBatchNorm` -- Cooijmans et al. 2016, "Recurrent Batch Normalization",
  sec. 3: separate statistics for each time step t (up to ``max_steps``; later steps reuse the
  statistics of the last one, sec. 3 "for t > T_max") with gamma shared over time and
  initialised to 0.1 (sec. 4: keeps the tanh/sigmoid inputs out of saturation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_positive_int
from ..functional.policy import RunningStats, Slot
from ._common import CheckedStateMixin, TorchOps, check_batch, check_channels, moments


class SequenceBatchNorm(CheckedStateMixin, nn.BatchNorm1d):
    """BN over (T, N, C) input (``batch_first=False``, as nn.LSTM) or (N, T, C).

    Every (step, sample) pair is one observation of each of the C features, so the statistics
    are the same for both layouts; ``batch_first`` only fixes which layout is accepted
    and documented. ``bias=False`` (with ``affine``): a gain and no shift, for a norm whose
    beta would duplicate a bias added right after it (an LSTM's gate bias, Cooijmans et al.
    2016 sec. 3). State dict = ``BatchNorm1d``'s (without ``bias`` then).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 batch_first: bool = False, bias: bool = True, device=None,
                 dtype=None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.batch_first = batch_first
        if affine and not bias:
            self.register_parameter("bias", None)

    def reset_parameters(self) -> None:
        """Running statistics to (0, 1); gamma to 1 and beta (when there is one) to 0."""
        self.reset_running_stats()
        if self.affine:
            nn.init.ones_(self.weight)
            if self.bias is not None:
                nn.init.zeros_(self.bias)

    def _check_sequence(self, x: torch.Tensor) -> None:
        if x.dim() != 3:
            layout = "(N, T, C)" if self.batch_first else "(T, N, C)"
            raise ValueError(f"input: expected 3D input {layout}, got {x.dim()}D input of "
                             f"shape {tuple(x.shape)}")
        if x.shape[2] != self.num_features:
            raise ValueError(f"input: expected {self.num_features} features in the last dim, "
                             f"got {x.shape[2]} (input shape {tuple(x.shape)})")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_sequence(x)
        return super().forward(x.reshape(-1, self.num_features)).reshape(x.shape)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", batch_first={self.batch_first}"


class RecurrentBatchNorm(RunningStats, CheckedStateMixin, nn.Module):
    """Per-time-step BN: ``forward(x, step)`` with x of shape (N, C) at time ``step``.

    Buffers ``running_mean``/``running_var`` are (max_steps, C) and ``num_batches_tracked`` is
    (max_steps,), one running average per step. ``steps_seen`` is one past the longest step
    trained; in eval, steps from there on (and steps >= max_steps always) use the statistics of
    the last step seen. Steps beyond ``max_steps`` are normalised with batch statistics in
    training but do not update the last slot, which keeps step T_max's own population. Each
    slot takes the running update every BN shares (:mod:`normlab.functional.policy`).
    ``bias=False`` (with ``affine``): gamma only, beta fixed at 0 (Cooijmans et al. sec. 3 set
    beta_x = beta_h = 0 "to avoid unnecessary redundancy" with the LSTM's own bias).
    """

    _ops = TorchOps

    def __init__(self, num_features: int, max_steps: int, eps: float = 1e-5,
                 momentum: float | None = 0.1, affine: bool = True, gamma_init: float = 0.1,
                 bias: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.max_steps = check_positive_int("max_steps", max_steps)
        self.eps, self.momentum, self.affine = eps, momentum, affine
        self.gamma_init = gamma_init
        if affine:
            self.weight = nn.Parameter(torch.full((num_features,), float(gamma_init), **kw))
            self.register_parameter("bias", nn.Parameter(torch.zeros(num_features, **kw))
                                    if bias else None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.register_buffer("running_mean", torch.zeros(max_steps, num_features, **kw))
        self.register_buffer("running_var", torch.ones(max_steps, num_features, **kw))
        self.register_buffer("num_batches_tracked",
                             torch.zeros(max_steps, dtype=torch.long, device=device))
        self.register_buffer("steps_seen", torch.tensor(0, dtype=torch.long, device=device))

    def reset_running_stats(self) -> None:
        """Running mean 0, variance 1 and the step counters 0, for every time step."""
        self.running_mean.zero_()
        self.running_var.fill_(1)
        self.num_batches_tracked.zero_()
        self.steps_seen.zero_()

    def _slot(self, step: int) -> int:
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step: expected a non-negative integer, got {step!r}")
        seen = int(self.steps_seen)
        last = self.max_steps - 1 if self.training or seen == 0 else min(seen, self.max_steps) - 1
        return min(step, last)

    def forward(self, x: torch.Tensor, step: int) -> torch.Tensor:
        if x.dim() != 2:
            raise ValueError(f"input: expected 2D input (N, C) for one time step, got "
                             f"{x.dim()}D input of shape {tuple(x.shape)}")
        check_channels(x, self.num_features)
        t = self._slot(step)
        if not self.training:
            return F.batch_norm(x, self.running_mean[t], self.running_var[t], self.weight,
                                self.bias, False, 0.0, self.eps)
        n = check_batch(x)
        y = F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        if step < self.max_steps:
            with torch.no_grad():
                mean, var = moments(x)
                slot = Slot(self.running_mean[t], self.running_var[t], self.num_batches_tracked[t])
                self._record(mean, var, n, state=slot)
                self.steps_seen.clamp_(min=t + 1)
        return y

    def extra_repr(self) -> str:
        return (f"{self.num_features}, max_steps={self.max_steps}, eps={self.eps}, "
                f"momentum={self.momentum}, affine={self.affine}, gamma_init={self.gamma_init}, "
                f"bias={self.bias is not None}")
