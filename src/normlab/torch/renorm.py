"""Batch Renormalization as drop-in torch modules (Ioffe 2017, Alg. 1).

The math -- r, d, the clipping limits and their warm-up schedule -- is the NumPy functional
core's (:mod:`normlab.functional.renorm`); here r and d are ``no_grad`` tensors (the paper's
stop_gradient), so the training forward is torch's batch norm with the effective affine map
``weight * r`` / ``weight * d + bias`` and autograd gives the paper's gradients exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .._checks import check_positive_int
from ..functional.ghost import virtual_splits
from ..functional.policy import RunningStats
from ..functional.renorm import RenormSchedule
from ._common import CheckedStateMixin, TorchOps, check_batch, check_channels, moments, pooled


class _BatchRenorm(RunningStats, CheckedStateMixin, _BatchNorm):
    """Shared state of BatchRenorm1d/2d: exactly BatchNorm's (same state-dict keys).

    ``schedule`` gives (r_max, d_max) as a function of ``num_batches_tracked`` (the number of
    training steps taken); the default is the paper's. Passing ``r_max``/``d_max`` fixes them.
    ``virtual_batch_size`` renormalises each virtual batch against the same running statistics
    and updates them once, from the count-weighted virtual-batch statistics (ghost BN's rule),
    with the running-statistics policy every BN shares (:mod:`normlab.functional.policy`).
    """

    _ops = TorchOps

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, schedule: RenormSchedule | None = None,
                 r_max: float | None = None, d_max: float | None = None,
                 device=None, dtype=None, virtual_batch_size: int | None = None) -> None:
        if schedule is not None and (r_max is not None or d_max is not None):
            raise ValueError("schedule: expected either a schedule or fixed r_max/d_max, "
                             f"got schedule={schedule!r}, r_max={r_max!r}, d_max={d_max!r}")
        if r_max is not None or d_max is not None:
            schedule = RenormSchedule.constant(1.0 if r_max is None else r_max,
                                               0.0 if d_max is None else d_max)
        self.schedule = schedule or RenormSchedule()
        self.virtual_batch_size = (None if virtual_batch_size is None else
                                   check_positive_int("virtual_batch_size", virtual_batch_size))
        super().__init__(num_features, eps, momentum, affine, True, device, dtype)

    def limits(self) -> tuple[float, float]:
        """(r_max, d_max) for the next training step."""
        return self.schedule(int(self.num_batches_tracked))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        check_channels(x, self.num_features)
        if not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                False, 0.0, self.eps)
        check_batch(x)
        r_max, d_max = self.limits()
        splits = virtual_splits(x.shape[0], self.virtual_batch_size or x.shape[0])
        ys, counts, means, unbiased = [], [], [], []
        for a, b in splits:
            y, n, mean, var = self._renorm(x[a:b], r_max, d_max)
            ys.append(y)
            counts.append(n)
            means.append(mean)
            unbiased.append(var * (n / (n - 1)))
        with torch.no_grad():
            self._record(*pooled(counts, means, unbiased))
        return ys[0] if len(ys) == 1 else torch.cat(ys, dim=0)

    def _renorm(self, x: torch.Tensor, r_max: float, d_max: float):
        """(y, values per channel, batch mean, biased batch var) of one (virtual) batch."""
        n = check_batch(x, "input (virtual batch)" if self.virtual_batch_size else "input")
        with torch.no_grad():
            mean, var = moments(x)
            sigma = (self.running_var + self.eps).sqrt()
            r = ((var + self.eps).sqrt() / sigma).clamp(1.0 / r_max, r_max)
            d = ((mean - self.running_mean) / sigma).clamp(-d_max, d_max)
        gamma = self.weight if self.affine else torch.ones_like(r)
        shift = gamma * d if self.bias is None else gamma * d + self.bias
        y = F.batch_norm(x, None, None, gamma * r.to(x.dtype), shift.to(x.dtype), True, 0.0,
                         self.eps)
        return y, n, mean, var

    def extra_repr(self) -> str:
        vbs = f", virtual_batch_size={self.virtual_batch_size}" if self.virtual_batch_size else ""
        return super().extra_repr() + f", schedule={self.schedule}{vbs}"


class BatchRenorm1d(_BatchRenorm):
    """Batch Renorm over (N, C) or (N, C, L) input, like ``torch.nn.BatchNorm1d``."""

    _check_input_dim = nn.BatchNorm1d._check_input_dim


class BatchRenorm2d(_BatchRenorm):
    """Batch Renorm over (N, C, H, W) input, like ``torch.nn.BatchNorm2d``."""

    _check_input_dim = nn.BatchNorm2d._check_input_dim
