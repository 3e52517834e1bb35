"""ReLU on the fast path: each direction one compiled pass, into a reused output.

Forward: the values of ``np.maximum(x, 0)`` bit for bit (NaN passes, -0.0 becomes +0.0), in a
loop that vectorises -- NumPy's NaN-aware maximum with a scalar runs at half that speed --
written into an :mod:`.outputs` buffer (eval batches of hundreds of feature maps are
megabytes, which a fresh array page-faults in).
Backward (torch's threshold_backward: dy where y > 0, else 0): NumPy needs a boolean temporary
and ``np.where`` (three passes); here one loop reads y and dy and writes dx. Same values bit
for bit: nothing is computed, only selected.
"""

from __future__ import annotations

import numpy as np

from . import outputs
from ._jit import inline, jit


@inline
def relu_value(v):
    """max(v, 0) with np.maximum's bits: NaN fails the comparison and passes, -0.0 becomes 0
    (also the clamp of :mod:`.fused`)."""
    return 0 if v <= 0 else v


@jit
def _relu(x, y):
    for i in range(x.size):
        y[i] = relu_value(x[i])


@jit
def _relu_backward(y, dy, dx):
    for i in range(y.size):
        dx[i] = dy[i] if y[i] > 0 else 0


def relu(x: np.ndarray) -> np.ndarray:
    """max(x, 0), NaN kept (C-contiguous)."""
    y = outputs.empty(x.shape, x.dtype)
    _relu(np.ascontiguousarray(x).reshape(-1), y.reshape(-1))
    return y


def relu_backward(y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """dx = dy where y > 0, else 0 (shape of y, dtype of dy)."""
    dx = outputs.empty(y.shape, dy.dtype)
    _relu_backward(np.ascontiguousarray(y).reshape(-1), np.ascontiguousarray(dy).reshape(-1),
                   dx.reshape(-1))
    return dx
