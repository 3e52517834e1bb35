"""Fully connected layer y = x W^T + b (weight stored (out_features, in_features) as in torch)."""

from __future__ import annotations

import numpy as np

from .._checks import as_float_array, check_positive_int
from . import init
from .module import Module, Parameter


class Linear(Module):
    """Affine map over the last axis; input (..., in_features).

    Initialised like ``torch.nn.Linear`` (see :func:`normlab.nn.init.torch_default`) from ``rng``
    (Generator, seed, or None = the module-level generator).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, rng=None,
                 dtype=np.float32):
        super().__init__()
        self.in_features = check_positive_int("in_features", in_features)
        self.out_features = check_positive_int("out_features", out_features)
        weight, b = init.torch_default((self.out_features, self.in_features), bias, rng, dtype)
        self.weight = Parameter(weight)
        self.bias = Parameter(b) if bias else None
        self._x: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float_array("x", x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"x: expected last dim {self.in_features} (in_features), "
                             f"got input shape {tuple(x.shape)}")
        self._x = x
        y = x @ self.weight.data.T
        if self.bias is not None:
            y += self.bias.data
        return y

    def backward_params(self, dy: np.ndarray) -> None:
        """dW = dy^T x, db = sum(dy) over the batch."""
        self._accumulate(self._checked(dy))

    def _checked(self, dy) -> np.ndarray:
        x = self._x
        return self._check_dy(dy, None if x is None else (*x.shape[:-1], self.out_features))

    def _accumulate(self, dy: np.ndarray) -> None:
        x = self._x
        dy2 = dy.reshape(-1, self.out_features)
        self.weight.accumulate(dy2.T @ x.reshape(-1, self.in_features))
        if self.bias is not None:
            self.bias.accumulate(dy2.sum(axis=0))

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dy = self._checked(dy)
        self._accumulate(dy)
        return dy @ self.weight.data

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")
