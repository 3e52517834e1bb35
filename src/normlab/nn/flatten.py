"""Flatten dims start_dim..end_dim into one (torch.nn.Flatten; default keeps the batch dim)."""

from __future__ import annotations

import numbers

import numpy as np

from .module import Module


def _dim(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    return int(value)


class Flatten(Module):
    """Reshape dims ``start_dim``..``end_dim`` into one (torch.nn.Flatten); backward restores the
    shape."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = _dim("start_dim", start_dim), _dim("end_dim", end_dim)
        self._shape = None       # input shape, for dx
        self._out_shape = None   # output shape, for checking dy

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            raise TypeError(f"x: expected a numpy.ndarray, got {type(x).__name__}")
        nd = x.ndim
        for name, d in (("start_dim", self.start_dim), ("end_dim", self.end_dim)):
            if not -nd <= d < nd:   # like torch: no wrapping modulo ndim
                raise ValueError(f"{name}: expected a dim in [{-nd}, {nd - 1}] for a {nd}D "
                                 f"input, got {d}")
        start, end = self.start_dim % nd, self.end_dim % nd
        if start > end:
            raise ValueError(f"start_dim: expected <= end_dim for a {nd}D input, got "
                             f"start_dim={self.start_dim}, end_dim={self.end_dim}")
        y = x.reshape(*x.shape[:start], -1, *x.shape[end + 1:])
        self._shape, self._out_shape = x.shape, y.shape
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dy = self._check_dy(dy, self._out_shape)
        return dy.reshape(self._shape)
