"""Shared helpers for the torch modules: reduction axes, input checks, batch statistics and
the buffer arithmetic of the running-statistics policy (:mod:`normlab.functional.policy`)."""

from __future__ import annotations

import math

import torch

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


def moments(x: torch.Tensor, correction: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, variance) per channel over every dim but 1, in x's dtype: the one place the torch
    modules take batch statistics (``correction=1``: Bessel-corrected)."""
    var, mean = torch.var_mean(x, dim=reduce_dims(x), correction=correction)
    return mean, var


def pooled(counts: list[int], means: list[torch.Tensor], variances: list[torch.Tensor]
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """The count-weighted mean of per-virtual-batch means and of their (unbiased) variances:
    ghost BN's running target (:func:`normlab.functional.ghost.ghost_batch_stats`)."""
    w = torch.tensor(counts, dtype=means[0].dtype, device=means[0].device)
    w = (w / w.sum())[:, None]
    return (w * torch.stack(means)).sum(0), (w * torch.stack(variances)).sum(0)


class TorchOps:
    """The buffer arithmetic of the torch modules for :mod:`normlab.functional.policy`: in-place
    tensor operations, as torch's own BatchNorm updates its buffers."""

    @staticmethod
    def blend(buf: torch.Tensor, target: torch.Tensor, factor: float) -> None:
        buf.mul_(1 - factor).add_(target.to(buf.dtype), alpha=factor)

    @staticmethod
    def increment(counter: torch.Tensor) -> None:
        counter.add_(1)

    @staticmethod
    def set_count(counter: torch.Tensor, value: int) -> None:
        counter.fill_(value)

    @staticmethod
    def assign(buf: torch.Tensor, value: torch.Tensor) -> None:
        buf.copy_(value)

    @staticmethod
    def widen(buf: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """The running statistic as ``exact`` merges it: in the batch statistics' dtype."""
        return buf.to(like.dtype)

    @staticmethod
    def finite(mean: torch.Tensor, var: torch.Tensor) -> bool:
        return bool(torch.isfinite(mean).all() and torch.isfinite(var).all())

    @staticmethod
    def counter(like: torch.Tensor) -> torch.Tensor:
        return torch.tensor(0, dtype=torch.long, device=like.device)

    @staticmethod
    def shrink(weight: torch.Tensor | None, s: float, like: torch.Tensor) -> torch.Tensor:
        """gamma / sqrt(s) (ones when affine=False), differentiable in gamma."""
        if weight is None:
            weight = torch.ones(like.shape[1], dtype=like.dtype, device=like.device)
        return weight / math.sqrt(s)


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
                if name == "running_var":
                    loading.check_variance(key, array)
                stats.append((key, array))
        loading.warn_nonfinite(f"{type(self).__name__}({prefix.rstrip('.') or 'root'})", stats,
                               stacklevel=6)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
