"""Layer normalization (Ba, Kiros & Hinton 2016): statistics over each sample's features.

The normalised axes are the trailing ``normalized_shape`` dims, as in torch.nn.LayerNorm; the
optional affine parameters are elementwise over those dims (eq. 4 of the paper: per hidden unit
gain and bias). No running statistics: training and inference compute the same thing.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import kernels
from .._checks import as_float_array, check_eps, check_grad, check_param
from .stats import normalize, normalize_backward, recentre


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
        centred = self.saved.astype(self.inv_std.dtype, copy=False) - self.mean
        recentre(centred, self.axes)
        return centred * self.inv_std


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
    normalized_shape = tuple(normalized_shape)
    x = check_input(x, normalized_shape)
    check_param("weight", weight, normalized_shape)
    check_param("bias", bias, normalized_shape)
    eps = check_eps(eps)
    fast = kernels.for_array(x, "layer")
    if fast is not None:
        return fast.forward(x, normalized_shape, weight, bias, eps)
    axes = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    norm = normalize(x, axes, eps)
    y = norm.x_hat * weight if weight is not None else norm.x_hat.copy()
    if bias is not None:
        y += bias
    cache = LayerNormCache(norm.x_hat, norm.inv_std, weight, axes, x.dtype)
    return y.astype(x.dtype, copy=False), cache


def layer_norm_backward(dy: np.ndarray, cache: LayerNormCache
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dweight, dbias); dweight/dbias sum over the leading (batch) axes."""
    dy = check_grad("dy", dy, cache.saved.shape)   # before the kernel indexes it
    fast = kernels.for_array(cache.saved, "layer") if cache.saved_is_input else None
    if fast is not None:
        return fast.backward(dy, cache)
    x_hat, weight, axes = cache.x_hat, cache.weight, cache.axes
    dy = dy.astype(x_hat.dtype, copy=False)
    lead = tuple(range(x_hat.ndim - len(axes)))
    dbias = dy.sum(axis=lead)
    dweight = (dy * x_hat).sum(axis=lead)
    dx_hat = dy * weight if weight is not None else dy
    dx = normalize_backward(dx_hat, x_hat, cache.inv_std, axes)
    return dx.astype(cache.dtype, copy=False), dweight, dbias
