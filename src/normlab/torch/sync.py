"""Synchronized batch norm that also runs on CPU (gloo), unlike torch.nn.SyncBatchNorm.

Statistics over the union of every process's batch (Ioffe & Szegedy 2015, sec. 3: the
statistics of the whole mini-batch, here split across processes):

* forward -- one ``all_gather`` of each process's (count, mean, M2) per channel, M2 = the sum of
  squared deviations from its own mean, merged with the parallel-variance formula of Chan,
  Golub & LeVeque (1979): mean = sum n_i mean_i / N, M2 = sum M2_i + sum n_i (mean_i - mean)^2.
  No raw sums of squares, so nothing cancels, and processes with 0 or 1 samples are fine.
* backward -- one ``all_reduce`` of the two per-channel sums (sum dy, sum dy * x_hat); then
  dx = gamma * inv_std / N * (N dy - sum dy - x_hat sum dy x_hat), the closed form of
  :func:`normlab.functional.batch.batch_norm_backward` with the global N.

``weight.grad``/``bias.grad`` are each process's local sums, as in torch.nn.SyncBatchNorm:
DistributedDataParallel reduces parameter gradients itself. Not distributed (or one process,
or eval): plain batch norm.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..functional.running import averaging_factor
from ._common import CheckedStateMixin, TorchOps, check_channels, moments, per_channel, reduce_dims


def _is_distributed(group) -> bool:
    return (dist.is_available() and dist.is_initialized()
            and dist.get_world_size(group) > 1)


def merge_moments(counts: torch.Tensor, means: torch.Tensor, m2s: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, mean, M2) of the union of P groups from their (P,), (P, C), (P, C) summaries."""
    total = counts.sum()
    mean = (counts[:, None] * means).sum(0) / total
    m2 = m2s.sum(0) + (counts[:, None] * (means - mean) ** 2).sum(0)
    return total, mean, m2


class _SyncBatchNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, eps, factor, group):
        c = x.shape[1]
        n = x.numel() // c if c else 0
        acc = torch.float64  # C-sized summaries: exact merging costs nothing
        if n > 0:
            mean, var = moments(x.to(acc))
            m2 = var * n
        else:
            mean = m2 = torch.zeros(c, dtype=acc, device=x.device)
        local = torch.cat([torch.tensor([float(n)], dtype=acc, device=x.device), mean, m2])
        gathered = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
        dist.all_gather(gathered, local, group=group)
        table = torch.stack(gathered)
        total, mean, m2 = merge_moments(table[:, 0], table[:, 1:c + 1], table[:, c + 1:])
        total = float(total)
        if total <= 1:
            raise ValueError(f"input: expected more than 1 value per channel over all "
                             f"processes when training, got {int(total)}")
        inv_std = torch.rsqrt(m2 / total + eps)
        x_hat = (x - per_channel(mean.to(x.dtype), x.dim())) * per_channel(inv_std.to(x.dtype),
                                                                           x.dim())
        y = x_hat if weight is None else x_hat * per_channel(weight, x.dim())
        if bias is not None:
            y = y + per_channel(bias, x.dim())
        if running_mean is not None:
            TorchOps.blend(running_mean, mean, factor)
            TorchOps.blend(running_var, m2 / (total - 1), factor)
        ctx.save_for_backward(x_hat, weight, inv_std.to(x.dtype))
        ctx.total, ctx.group = total, group
        return y

    @staticmethod
    def backward(ctx, dy):
        x_hat, weight, inv_std = ctx.saved_tensors
        dims = reduce_dims(dy)
        sum_dy = dy.sum(dims)
        sum_dy_xhat = (dy * x_hat).sum(dims)
        both = torch.cat([sum_dy, sum_dy_xhat])
        dist.all_reduce(both, group=ctx.group)
        g_dy, g_dy_xhat = both.chunk(2)
        scale = inv_std if weight is None else inv_std * weight
        nd = dy.dim()
        dx = (dy - per_channel(g_dy / ctx.total, nd)
              - x_hat * per_channel(g_dy_xhat / ctx.total, nd)) * per_channel(scale, nd)
        dweight = sum_dy_xhat if weight is not None and ctx.needs_input_grad[1] else None
        dbias = sum_dy if ctx.needs_input_grad[2] else None
        return dx, dweight, dbias, None, None, None, None, None


class SyncBatchNorm(CheckedStateMixin, _BatchNorm):
    """Cross-process batch norm for any (N, C, ...) input, working with the gloo backend."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, process_group=None,
                 device=None, dtype=None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.process_group = process_group

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"input: expected at least 2D input (N, C, ...), got {x.dim()}D "
                             f"input of shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        check_channels(x, self.num_features)
        batch_stats = self.training or self.running_mean is None   # torch's rule for eval
        if not batch_stats or not _is_distributed(self.process_group):
            return super().forward(x)
        tracking = self.training and self.track_running_stats and self.running_mean is not None
        factor = 0.0
        if tracking:
            self.num_batches_tracked.add_(1)
            factor = averaging_factor(self.momentum, int(self.num_batches_tracked))
        return _SyncBatchNormFn.apply(
            x, self.weight, self.bias, self.running_mean if tracking else None,
            self.running_var if tracking else None, self.eps, factor, self.process_group)


_PLAIN_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def convert_sync_batchnorm(module: nn.Module, process_group=None) -> nn.Module:
    """Replace torch.nn.BatchNorm*d / SyncBatchNorm layers by :class:`SyncBatchNorm` (state
    and mode preserved); returns the module, or its replacement when it is itself a BN."""
    if type(module) in _PLAIN_BN:
        ref = module.weight if module.affine else module.running_mean
        new = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats, process_group,
                            device=None if ref is None else ref.device,
                            dtype=None if ref is None else ref.dtype)
        new.load_state_dict(module.state_dict())
        if module.affine:
            new.weight.requires_grad_(module.weight.requires_grad)
            new.bias.requires_grad_(module.bias.requires_grad)
        return new.train(module.training)
    for name, child in module.named_children():
        new_child = convert_sync_batchnorm(child, process_group)
        if new_child is not child:
            setattr(module, name, new_child)
    return module
