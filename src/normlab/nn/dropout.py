"""Inverted dropout (Srivastava et al. 2014): scale kept units by 1/(1-p) in training so that
eval mode is the identity."""

from __future__ import annotations

import numbers

import numpy as np

from .._checks import as_float_array
from . import init
from .module import Module


def dropout_mask(rng: np.random.Generator, p: float, shape: tuple[int, ...],
                 dtype) -> np.ndarray:
    """One inverted-dropout mask: each element 1/(1-p) with probability 1-p, else 0 (all 0 at
    p = 1). Holding the scale, forward and backward are one multiply each."""
    keep = 1.0 - p
    scale = np.asarray(1.0 / keep if keep > 0 else 0.0, dtype=dtype)
    return (rng.random(shape, dtype=np.float32) < keep) * scale


class Dropout(Module):
    """Zero each element with probability ``p`` in training.

    ``rng``: a numpy Generator, a seed, or None (the module-level generator of
    :mod:`normlab.nn.init`); the masks are the only randomness, so a fixed seed fixes the run.
    """

    def __init__(self, p: float = 0.5, *, rng=None):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
            raise ValueError(f"p: expected a probability in [0, 1], got {p!r}")
        self.p = float(p)
        self.rng = init.get_rng(rng)
        self._mask = None
        self._shape: tuple[int, ...] | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float_array("x", x)
        self._shape = x.shape
        if not self.training or self.p == 0.0:
            self._mask = None
            return x
        self._mask = dropout_mask(self.rng, self.p, x.shape, x.dtype)
        return x * self._mask

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dy = self._check_dy(dy, self._shape)
        return dy if self._mask is None else dy * self._mask

    def extra_repr(self) -> str:
        return f"p={self.p}"
