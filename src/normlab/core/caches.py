"""What each family's training forward leaves for its backward, from either backend.

The NumPy reference saves ``x_hat`` itself; the numba kernels save the input ``x`` (plus mean
and inv_std) and set ``saved_is_input``, so their forward writes nothing but y. Either backward
accepts either cache: ``x_hat`` recomputes the normalised input when only x was kept.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .shapes import channel_axes, per_channel
from .stats import standardize


class BatchNormCache(NamedTuple):
    """What :func:`normlab.functional.batch_norm_train` keeps for its backward: the normalised
    input (or the input), 1/sqrt(var + eps), gamma, the batch mean and biased variance
    (Alg. 1), and m, the number of values per channel."""

    saved: np.ndarray           # x_hat (NumPy path), or x itself when saved_is_input (kernels)
    inv_std: np.ndarray         # keepdims per-channel 1/sqrt(var + eps)
    weight: np.ndarray | None   # gamma, or None when affine=False
    mean: np.ndarray            # (C,) batch mean
    var: np.ndarray             # (C,) biased batch variance (what normalises, Alg. 1 line 2)
    n: int                      # values per channel, the paper's m
    dtype: np.dtype             # dtype of the input, for casting dx back
    saved_is_input: bool = False
    # (C,) float64, kernels only: the exact batch mean minus ``mean`` (which is rounded to the
    # data dtype). The kernel backward takes it out of x_hat again; see kernels.batch_loops.
    offset: np.ndarray | None = None

    @property
    def x_hat(self) -> np.ndarray:
        """The normalised input (recomputed when the fast path saved x instead)."""
        if not self.saved_is_input:
            return self.saved
        ndim = self.saved.ndim
        return standardize(self.saved, per_channel(self.mean, ndim), self.inv_std,
                           channel_axes(ndim))


class LayerNormCache(NamedTuple):
    saved: np.ndarray                # x_hat (NumPy path), or x itself when saved_is_input
    inv_std: np.ndarray
    weight: np.ndarray | None
    axes: tuple[int, ...]
    dtype: np.dtype
    mean: np.ndarray | None = None   # keepdims; set by the kernel path, which saves x
    saved_is_input: bool = False
    offset: np.ndarray | None = None  # (rows,) float64, kernels: exact mean minus ``mean``

    @property
    def x_hat(self) -> np.ndarray:
        """The normalised input (recomputed when the fast path saved x instead)."""
        if not self.saved_is_input:
            return self.saved
        return standardize(self.saved, self.mean, self.inv_std, self.axes)


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
        grouped = self.saved.reshape(*self.mean.shape, -1)
        return standardize(grouped, self.mean[..., None], self.inv_std, (2,))
