"""Ghost (virtual-batch) batch norm as drop-in torch modules (Hoffer et al. 2017, sec. 4).

Splitting and the running-statistic rule are the functional core's
(:func:`normlab.functional.ghost.virtual_splits`): each virtual batch is normalised with its
own statistics; once per step the running averages take the count-weighted mean of the virtual
batches' means and unbiased variances in one momentum update. Eval uses the running statistics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .._checks import check_positive_int
from ..functional.ghost import virtual_splits
from ..functional.policy import RunningStats
from ._common import (
    CheckedStateMixin,
    TorchOps,
    check_batch,
    check_channels,
    moments,
    pooled,
)


class _GhostBatchNorm(RunningStats, CheckedStateMixin, _BatchNorm):
    """Ghost BN; the running update is the shared policy's (torch's options: EMA, momentum=None
    cumulative), one step per batch toward the pooled virtual-batch statistics."""

    _ops = TorchOps

    def __init__(self, num_features: int, virtual_batch_size: int, eps: float = 1e-5,
                 momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, device=None, dtype=None) -> None:
        self.virtual_batch_size = check_positive_int("virtual_batch_size", virtual_batch_size)
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        check_channels(x, self.num_features)
        if not self.training and self.running_mean is not None:   # torch: buffers, if any
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                False, 0.0, self.eps)
        splits = virtual_splits(x.shape[0], self.virtual_batch_size)
        chunks = [x[a:b] for a, b in splits]
        for c in chunks:
            check_batch(c, "input (virtual batch)")
        ys = [F.batch_norm(c, None, None, self.weight, self.bias, True, 0.0, self.eps)
              for c in chunks]
        if self.training and self.track_running_stats and self.running_mean is not None:
            self._update(chunks)
        return torch.cat(ys, dim=0)

    @torch.no_grad()
    def _update(self, chunks: list[torch.Tensor]) -> None:
        counts, means, unbiased = [], [], []
        for c in chunks:
            mean, var = moments(c, correction=1)
            counts.append(c.numel() // c.shape[1])
            means.append(mean)
            unbiased.append(var)
        self._record(*pooled(counts, means, unbiased))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", virtual_batch_size={self.virtual_batch_size}"


class GhostBatchNorm1d(_GhostBatchNorm):
    """Ghost BN over (N, C) or (N, C, L) input."""

    _check_input_dim = nn.BatchNorm1d._check_input_dim


class GhostBatchNorm2d(_GhostBatchNorm):
    """Ghost BN over (N, C, H, W) input."""

    _check_input_dim = nn.BatchNorm2d._check_input_dim
