"""Layer normalization (Ba, Kiros & Hinton 2016) and its re-scaling-only simplification RMSNorm
(Zhang & Sennrich 2019): statistics over each sample's features.

The normalised axes are the trailing ``normalized_shape`` dims, as in torch.nn.LayerNorm and
torch.nn.RMSNorm; the optional affine parameters are elementwise over those dims (Ba et al.
eq. 4: per hidden unit gain and bias; Zhang & Sennrich eq. 4: a gain only). No running
statistics: training and inference compute the same thing.
"""

from __future__ import annotations

import numpy as np

from .._checks import as_float_array, check_eps, check_grad, check_param
from ..core.caches import LayerNormCache
from . import backend

__all__ = ["LayerNormCache", "check_input", "layer_norm_backward", "layer_norm_forward",
           "rms_norm_backward", "rms_norm_forward"]


def check_input(x, normalized_shape: tuple[int, ...], name: str = "x") -> np.ndarray:
    x = as_float_array(name, x)
    k = len(normalized_shape)
    if x.ndim < k or tuple(x.shape[x.ndim - k:]) != tuple(normalized_shape):
        raise ValueError(f"{name}: expected trailing dims {tuple(normalized_shape)} "
                         f"(normalized_shape), got input shape {tuple(x.shape)}")
    return x


def layer_norm_forward(x: np.ndarray, normalized_shape: tuple[int, ...],
                       weight: np.ndarray | None = None, bias: np.ndarray | None = None,
                       eps: float = 1e-5) -> tuple[np.ndarray, LayerNormCache]:
    """Layer normalization forward (Ba et al. 2016, eq. 4) over the trailing ``normalized_shape``
    dims of each sample: (y, cache for :func:`layer_norm_backward`)."""
    normalized_shape = tuple(normalized_shape)
    x = check_input(x, normalized_shape)
    check_param("weight", weight, normalized_shape)
    check_param("bias", bias, normalized_shape)
    eps = check_eps(eps)
    return backend.for_array(x, "layer").forward(x, normalized_shape, weight, bias, eps)


def layer_norm_backward(dy: np.ndarray, cache: LayerNormCache
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dweight, dbias); dweight/dbias sum over the leading (batch) axes."""
    dy = check_grad("dy", dy, cache.saved.shape)   # before the kernel indexes it
    return backend.for_cache(cache, "layer").backward(dy, cache)


def rms_norm_forward(x: np.ndarray, normalized_shape: tuple[int, ...],
                     weight: np.ndarray | None = None, eps: float | None = None
                     ) -> tuple[np.ndarray, LayerNormCache]:
    """RMSNorm forward (Zhang & Sennrich 2019, eq. 4) over the trailing ``normalized_shape``
    dims of each sample: (y, cache for :func:`rms_norm_backward`). ``eps=None`` is the input
    dtype's machine epsilon, as ``torch.nn.functional.rms_norm``."""
    normalized_shape = tuple(normalized_shape)
    x = check_input(x, normalized_shape)
    check_param("weight", weight, normalized_shape)
    eps = float(np.finfo(x.dtype).eps) if eps is None else check_eps(eps)
    return backend.for_array(x, "rms").forward(x, normalized_shape, weight, eps)


def rms_norm_backward(dy: np.ndarray, cache: LayerNormCache) -> tuple[np.ndarray, np.ndarray]:
    """(dx, dweight); dweight sums over the leading (batch) axes."""
    dy = check_grad("dy", dy, cache.saved.shape)
    return backend.for_cache(cache, "rms").backward(dy, cache)
