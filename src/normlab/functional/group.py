"""Group normalization (Wu & He 2018) and instance normalization as its special case.

GroupNorm splits the C channels into ``num_groups`` groups and normalises each sample's group
over (C/G, H, W) (the paper's eq. 1 with S_i = the sample's group). One group is LayerNorm over
(C, H, W); C groups is InstanceNorm (Ulyanov et al. 2016). The affine map is per channel.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import kernels
from .._checks import (
    as_float_array,
    check_eps,
    check_grad,
    check_ndim,
    check_param,
    check_positive_int,
)
from .batch import per_channel
from .stats import count, normalize, normalize_backward, recentre


class GroupNormCache(NamedTuple):
    saved: np.ndarray            # x_hat as (N, G, C/G * spatial), or x itself if saved_is_input
    inv_std: np.ndarray          # (N, G, 1)
    weight: np.ndarray | None
    mean: np.ndarray             # (N, G) per-sample group mean
    var: np.ndarray              # (N, G) biased
    n: int                       # values per group
    shape: tuple[int, ...]       # input shape
    dtype: np.dtype
    saved_is_input: bool = False
    offset: np.ndarray | None = None  # (N*G,) float64, kernels: exact mean minus ``mean``

    @property
    def x_hat(self) -> np.ndarray:
        """x_hat as (N, G, C/G * spatial), recomputed when the fast path saved x instead."""
        if not self.saved_is_input:
            return self.saved
        grouped = self.saved.reshape(*self.mean.shape, -1).astype(self.inv_std.dtype, copy=False)
        centred = grouped - self.mean[..., None]
        recentre(centred, (2,))
        return centred * self.inv_std


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
    num_groups = check_positive_int("num_groups", num_groups)
    x = check_input(x, None, num_groups)
    for name, p in (("weight", weight), ("bias", bias)):
        check_param(name, p, (x.shape[1],))
    eps = check_eps(eps)
    if count(x.shape, tuple(range(2, x.ndim))) * x.shape[1] // num_groups <= 1:
        raise ValueError(f"x: expected more than 1 value per group, got input size "
                         f"{tuple(x.shape)} with num_groups={num_groups}")
    fast = kernels.for_array(x, "group")
    if fast is not None:
        return fast.forward(x, num_groups, weight, bias, eps)
    n_batch = x.shape[0]
    # explicit group size: -1 cannot be inferred for an empty batch (torch returns it empty)
    grouped = x.reshape(n_batch, num_groups, x.shape[1] // num_groups
                        * count(x.shape, tuple(range(2, x.ndim))))
    norm = normalize(grouped, (2,), eps)
    x_hat = norm.x_hat.reshape(x.shape)
    y = x_hat * per_channel(weight, x.ndim) if weight is not None else x_hat.copy()
    if bias is not None:
        y += per_channel(bias, x.ndim)
    cache = GroupNormCache(norm.x_hat, norm.inv_std, weight, norm.mean[..., 0], norm.var[..., 0],
                           count(grouped.shape, (2,)), tuple(x.shape), x.dtype)
    return y.astype(x.dtype, copy=False), cache


def group_norm_backward(dy: np.ndarray, cache: GroupNormCache
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dweight, dbias); the parameter gradients are per channel."""
    dy = check_grad("dy", dy, cache.shape)   # before the kernel indexes it
    fast = kernels.for_array(cache.saved, "group") if cache.saved_is_input else None
    if fast is not None:
        return fast.backward(dy, cache)
    shape, weight = cache.shape, cache.weight
    grouped_x_hat = cache.x_hat
    x_hat = grouped_x_hat.reshape(shape)
    dy = dy.astype(x_hat.dtype, copy=False)
    axes = (0, *range(2, len(shape)))
    dbias = dy.sum(axis=axes)
    dweight = (dy * x_hat).sum(axis=axes)
    dx_hat = dy * per_channel(weight, dy.ndim) if weight is not None else dy
    dx = normalize_backward(dx_hat.reshape(grouped_x_hat.shape), grouped_x_hat, cache.inv_std,
                            (2,))
    return dx.reshape(shape).astype(cache.dtype, copy=False), dweight, dbias


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
    new_mean = (1.0 - factor) * running_mean + factor * cache.mean.mean(axis=0)
    new_var = (1.0 - factor) * running_var + factor * unbiased.mean(axis=0)
    return new_mean.astype(running_mean.dtype), new_var.astype(running_var.dtype)
