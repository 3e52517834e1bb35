"""The per-sample norms of the NumPy engine: LayerNorm (Ba et al. 2016), RMSNorm (Zhang &
Sennrich 2019) and GroupNorm (Wu & He 2018). Their statistics are each sample's own, so there
are no running statistics and training and inference compute the same thing."""

from __future__ import annotations

import numbers

import numpy as np

from .. import functional as F
from .._checks import check_eps, check_positive_int
from ..functional.group import check_input as check_group_input
from .module import Module, Parameter
from .norm_base import accumulate, check_flag
from .saved import Saved

__all__ = ["GroupNorm", "LayerNorm", "RMSNorm"]


def _normalized_shape(normalized_shape) -> tuple[int, ...]:
    if isinstance(normalized_shape, numbers.Integral):
        normalized_shape = (normalized_shape,)
    if not isinstance(normalized_shape, (tuple, list)) or not normalized_shape:
        raise TypeError(f"normalized_shape: expected a positive int or a non-empty tuple of "
                        f"them, got {normalized_shape!r}")
    return tuple(check_positive_int("normalized_shape", d) for d in normalized_shape)


class LayerNorm(Module):
    """Layer normalization (Ba et al. 2016) over the trailing ``normalized_shape`` dims."""

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, *, dtype=np.float32):
        super().__init__()
        self.normalized_shape = _normalized_shape(normalized_shape)
        self.eps = check_eps(eps)
        self.elementwise_affine = check_flag("elementwise_affine", elementwise_affine)
        dtype = np.dtype(dtype)
        if self.elementwise_affine:
            self.weight = Parameter(np.ones(self.normalized_shape, dtype=dtype))
            self.bias = Parameter(np.zeros(self.normalized_shape, dtype=dtype)) if bias else None
        else:
            self.weight = None
            self.bias = None
        self._cache = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        weight = None if self.weight is None else self.weight.data
        bias = None if self.bias is None else self.bias.data
        y, cache = F.layer_norm_forward(x, self.normalized_shape, weight, bias, self.eps)
        self._cache = Saved(F.layer_norm_backward, cache)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dx, dweight, dbias = self._saved(self._cache).backward(dy)
        accumulate(self.weight, self.bias, dweight, dbias)
        return dx

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")


class RMSNorm(Module):
    """RMSNorm (Zhang & Sennrich 2019, eq. 4) over the trailing ``normalized_shape`` dims:
    ``x / sqrt(mean(x^2) + eps) * weight``, torch.nn.RMSNorm's arguments and state dict
    (``eps=None``: the input dtype's machine epsilon; a gain, no bias)."""

    def __init__(self, normalized_shape, eps: float | None = None,
                 elementwise_affine: bool = True, *, dtype=np.float32):
        super().__init__()
        self.normalized_shape = _normalized_shape(normalized_shape)
        self.eps = None if eps is None else check_eps(eps)
        self.elementwise_affine = check_flag("elementwise_affine", elementwise_affine)
        self.weight = (Parameter(np.ones(self.normalized_shape, dtype=np.dtype(dtype)))
                       if self.elementwise_affine else None)
        self._cache = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        weight = None if self.weight is None else self.weight.data
        y, cache = F.rms_norm_forward(x, self.normalized_shape, weight, self.eps)
        self._cache = Saved(F.rms_norm_backward, cache)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dx, dweight = self._saved(self._cache).backward(dy)
        accumulate(self.weight, None, dweight, None)
        return dx

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")


class GroupNorm(Module):
    """Group normalization (Wu & He 2018, eq. 1 with S_i = the sample's channel group)."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5,
                 affine: bool = True, *, dtype=np.float32):
        super().__init__()
        self.num_groups = check_positive_int("num_groups", num_groups)
        self.num_channels = check_positive_int("num_channels", num_channels)
        if self.num_channels % self.num_groups:
            raise ValueError(f"num_groups: expected a divisor of num_channels="
                             f"{self.num_channels}, got {self.num_groups}")
        self.eps = check_eps(eps)
        self.affine = check_flag("affine", affine)
        dtype = np.dtype(dtype)
        if self.affine:
            self.weight = Parameter(np.ones(self.num_channels, dtype=dtype))
            self.bias = Parameter(np.zeros(self.num_channels, dtype=dtype))
        else:
            self.weight = None
            self.bias = None
        self._cache = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_group_input(x, self.num_channels, self.num_groups)
        weight, bias = (self.weight.data, self.bias.data) if self.affine else (None, None)
        y, cache = F.group_norm_forward(x, self.num_groups, weight, bias, self.eps)
        self._cache = Saved(F.group_norm_backward, cache)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dx, dweight, dbias = self._saved(self._cache).backward(dy)
        if self.affine:
            accumulate(self.weight, self.bias, dweight, dbias)
        return dx

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"
