"""Elementwise nonlinearities; each caches its output, from which its derivative follows."""

from __future__ import annotations

import numpy as np

from .. import kernels
from .._checks import as_float_array
from .module import Module


class _Elementwise(Module):
    """Caches its output ``_y``, which fixes the shape ``dy`` must have."""

    _y: np.ndarray | None = None

    def _checked(self, dy) -> tuple[np.ndarray, np.ndarray]:
        y = self._y
        return self._check_dy(dy, None if y is None else y.shape), y


class ReLU(_Elementwise):
    """max(x, 0); the gradient passes where the output is positive."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float_array("x", x)
        fast = kernels.for_array(x, "activation")
        y = np.maximum(x, 0) if fast is None else fast.relu(x)
        self._y = y
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dy, y = self._checked(dy)
        fast = kernels.for_array(dy, "activation")
        if fast is not None:   # one compiled pass (normlab.kernels.activation)
            return fast.relu_backward(y, dy)
        # torch's threshold_backward: gradient passes where the output is > 0.
        return np.where(y > 0, dy, 0).astype(dy.dtype, copy=False)


class Sigmoid(_Elementwise):
    """sigma(x) = 1 / (1 + e^-x); d sigma = sigma (1 - sigma)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float_array("x", x)
        # sigma(x) = (1 + tanh(x/2)) / 2: never overflows, and four in-place passes are ~3x
        # cheaper than the branchy exp(-|x|) form. Absolute error stays at the dtype's epsilon;
        # only outputs below ~eps (x < -17 in float32) round to 0 instead of a tiny value.
        y = np.multiply(x, 0.5, dtype=x.dtype)
        np.tanh(y, out=y)
        y *= 0.5
        y += 0.5
        self._y = y
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dy, y = self._checked(dy)
        return dy * (y * (1 - y))


class Tanh(_Elementwise):
    """tanh(x); d tanh = 1 - tanh^2."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float_array("x", x)
        y = np.tanh(x)
        self._y = y
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dy, y = self._checked(dy)
        return dy * (1 - y * y)
