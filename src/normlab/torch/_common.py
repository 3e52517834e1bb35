"""Shared helpers for the torch modules: reduction axes, input checks, running-stat update."""

from __future__ import annotations

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from ..nn import loading


def reduce_dims(x: torch.Tensor) -> list[int]:
    """Every dim but the channel dim 1 (the paper's conv BN, sec. 3.2)."""
    return [0, *range(2, x.dim())]


def check_channels(x: torch.Tensor, num_features: int, name: str = "input") -> None:
    if x.dim() < 2 or x.shape[1] != num_features:
        got = x.shape[1] if x.dim() >= 2 else "no channel dim"
        raise ValueError(f"{name}: expected {num_features} channels in dim 1, got {got} "
                         f"(input shape {tuple(x.shape)})")


def check_batch(x: torch.Tensor, name: str = "input") -> int:
    """Values per channel; training needs more than one (a single value has no variance)."""
    n = x.numel() // max(x.shape[1], 1)
    if n <= 1:
        raise ValueError(f"{name}: expected more than 1 value per channel when training, "
                         f"got input size {tuple(x.shape)}")
    return n


def per_channel(v: torch.Tensor, ndim: int) -> torch.Tensor:
    return v.reshape((1, -1) + (1,) * (ndim - 2))


@torch.no_grad()
def update_running_stats(bn: _BatchNorm, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
    """One BN running-average step, PyTorch's convention (running = (1-m)*running + m*batch;
    ``momentum=None`` = cumulative average over ``num_batches_tracked``)."""
    bn.num_batches_tracked.add_(1)
    factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    bn.running_mean.mul_(1 - factor).add_(mean.to(bn.running_mean.dtype), alpha=factor)
    bn.running_var.mul_(1 - factor).add_(unbiased_var.to(bn.running_var.dtype), alpha=factor)


class CheckedStateMixin:
    """``_load_from_state_dict`` with the checks torch's lacks (:mod:`normlab.nn.loading`):
    a count buffer that is NaN, fractional, negative or past int64 raises ``ValueError`` and a
    numpy masked array ``TypeError``, both before this module's state changes; NaN/inf running
    statistics load with one warning naming the keys and channel counts."""

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        stats = []
        for name, buf in self._buffers.items():
            key = prefix + name
            if buf is None or key not in state_dict:
                continue
            value = state_dict[key]
            loading.refuse_masked(key, value)
            if not isinstance(value, torch.Tensor):
                continue   # torch itself refuses anything but a tensor
            array = value.detach().cpu()
            array = (array.double() if array.is_floating_point() else array).numpy()
            if not buf.is_floating_point():
                loading.check_count(key, array)
            elif name in loading.RUNNING_STATS:
                stats.append((key, array))
        loading.warn_nonfinite(f"{type(self).__name__}({prefix.rstrip('.') or 'root'})", stats,
                               stacklevel=6)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
