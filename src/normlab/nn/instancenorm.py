"""Instance normalization (Ulyanov et al. 2016) for the NumPy engine: GroupNorm with one group
per channel, with torch.nn.InstanceNorm*d's defaults and running-statistics rule."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from .._checks import as_float_array, check_ndim
from ..functional.batch import check_input, eval_checked
from .norm_base import NormBase
from .saved import Eval, Saved, Unbatched


class InstanceNormBase(NormBase):
    """Instance normalization (Ulyanov et al. 2016): GroupNorm with one group per channel.

    torch defaults: affine=False, track_running_stats=False. With running stats, eval mode
    normalises with them (as torch does) and ``momentum=None`` means 0.0 (no update), which is
    what torch's InstanceNorm passes to the functional call. ``num_batches_tracked`` exists for
    state-dict compatibility but, as in torch, is never incremented.
    """

    input_ndims: tuple[int, ...] = (3,)   # batched; one dim fewer is an unbatched sample

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = False, track_running_stats: bool = False, *, dtype=np.float32):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype=dtype)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x, unbatched = self._batched(x)
        weight, bias = self._params()
        if self.training or not self.track_running_stats:
            y, cache = F.instance_norm_forward(x, weight, bias, self.eps)
            if self.training and self.track_running_stats and self.running_mean is not None:
                factor = 0.0 if self.momentum is None else self.momentum
                mean, var = F.instance_running_update(self.running_mean, self.running_var,
                                                      cache, factor)
                self.running_mean[...] = mean
                self.running_var[...] = var
            saved = Saved(F.instance_norm_backward, cache)
        else:
            y = eval_checked(x, self.running_mean, self.running_var, weight, bias, self.eps)
            saved = Eval(x, self.running_mean, self.running_var, weight, self.eps)
        self._cache = Unbatched(saved, x.shape[1:]) if unbatched else saved
        return y[0] if unbatched else y

    def _batched(self, x) -> tuple[np.ndarray, bool]:
        """(x as a batch, whether it came unbatched): like torch, an input one dim short of the
        batched layout -- (C, L), (C, H, W), (C, D, H, W) -- is one sample."""
        ndim = self.input_ndims[0]
        x = as_float_array("x", x)
        check_ndim("x", x, (ndim - 1, ndim), "(N, C, ...) or (C, ...)")
        unbatched = x.ndim == ndim - 1
        if unbatched and x.shape[0] != self.num_features:
            raise ValueError(f"x: expected {self.num_features} channels in dim 0 of an unbatched "
                             f"input, got {x.shape[0]} (input shape {tuple(x.shape)})")
        x = x[None] if unbatched else x
        return check_input(x, self.num_features, ndims=self.input_ndims), unbatched


class InstanceNorm1d(InstanceNormBase):
    """Input (N, C, L) or unbatched (C, L)."""

    input_ndims = (3,)


class InstanceNorm2d(InstanceNormBase):
    """Input (N, C, H, W) or unbatched (C, H, W)."""

    input_ndims = (4,)


class InstanceNorm3d(InstanceNormBase):
    """Input (N, C, D, H, W) or unbatched (C, D, H, W)."""

    input_ndims = (5,)
