"""Group normalization (Wu & He 2018) and instance normalization as its special case.

GroupNorm splits the C channels into ``num_groups`` groups and normalises each sample's group
over (C/G, H, W) (the paper's eq. 1 with S_i = the sample's group). One group is LayerNorm over
(C, H, W); C groups is InstanceNorm (Ulyanov et al. 2016). The affine map is per channel.
"""

from __future__ import annotations

import numpy as np

from .._checks import (
    as_float_array,
    check_eps,
    check_grad,
    check_ndim,
    check_param,
    check_positive_int,
)
from ..core.caches import GroupNormCache
from ..core.shapes import count
from . import backend
from .running import blend

__all__ = ["GroupNormCache", "check_input", "group_norm_backward", "group_norm_forward",
           "instance_norm_backward", "instance_norm_forward", "instance_running_update"]


def check_input(x, num_channels: int | None, num_groups: int, *, min_ndim: int = 2,
                name: str = "x") -> np.ndarray:
    x = as_float_array(name, x)
    check_ndim(name, x, tuple(range(min_ndim, 6)), "(N, C, ...)")
    num_channels = x.shape[1] if num_channels is None else num_channels
    if x.shape[1] != num_channels:
        raise ValueError(f"{name}: expected {num_channels} channels in dim 1, got {x.shape[1]} "
                         f"(input shape {tuple(x.shape)})")
    if num_channels % num_groups:
        raise ValueError(f"num_groups: expected a divisor of num_channels={num_channels}, "
                         f"got {num_groups}")
    return x


def group_norm_forward(x: np.ndarray, num_groups: int, weight: np.ndarray | None = None,
                       bias: np.ndarray | None = None,
                       eps: float = 1e-5) -> tuple[np.ndarray, GroupNormCache]:
    """Group normalization forward (Wu & He 2018, eq. 1 with S_i = a sample's group of C/G
    channels): (y, cache for :func:`group_norm_backward`)."""
    num_groups = check_positive_int("num_groups", num_groups)
    x = check_input(x, None, num_groups)
    for name, p in (("weight", weight), ("bias", bias)):
        check_param(name, p, (x.shape[1],))
    eps = check_eps(eps)
    if count(x.shape, tuple(range(2, x.ndim))) * x.shape[1] // num_groups <= 1:
        raise ValueError(f"x: expected more than 1 value per group, got input size "
                         f"{tuple(x.shape)} with num_groups={num_groups}")
    return backend.for_array(x, "group").forward(x, num_groups, weight, bias, eps)


def group_norm_backward(dy: np.ndarray, cache: GroupNormCache
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dweight, dbias); the parameter gradients are per channel."""
    dy = check_grad("dy", dy, cache.shape)   # before the kernel indexes it
    return backend.for_cache(cache, "group").backward(dy, cache)


def instance_norm_forward(x: np.ndarray, weight: np.ndarray | None = None,
                          bias: np.ndarray | None = None,
                          eps: float = 1e-5) -> tuple[np.ndarray, GroupNormCache]:
    """InstanceNorm: one group per channel, statistics over each sample's spatial positions."""
    return group_norm_forward(x, x.shape[1], weight, bias, eps)


instance_norm_backward = group_norm_backward


def instance_running_update(running_mean: np.ndarray, running_var: np.ndarray,
                            cache: GroupNormCache, factor: float
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Running statistics as torch.nn.InstanceNorm*d(track_running_stats=True) keeps them.

    Each channel's running estimate moves toward the batch average of the per-instance mean and
    of the per-instance *unbiased* variance.
    """
    unbiased = cache.var * (cache.n / (cache.n - 1))
    return (blend(running_mean, cache.mean.mean(axis=0), factor),
            blend(running_var, unbiased.mean(axis=0), factor))
