"""Central finite differences in float64, for checking every hand-written backward."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def numerical_grad(f: Callable[[], float], x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """d f / d x by central differences; ``x`` is perturbed in place and restored."""
    grad = np.zeros_like(x, dtype=np.float64)
    flat, g = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        plus = f()
        flat[i] = old - h
        minus = f()
        flat[i] = old
        g[i] = (plus - minus) / (2 * h)
    return grad


def assert_grad_close(analytic: np.ndarray, numeric: np.ndarray, rtol: float = 1e-6,
                      atol: float = 1e-8) -> None:
    np.testing.assert_allclose(analytic, numeric, rtol=rtol, atol=atol)
