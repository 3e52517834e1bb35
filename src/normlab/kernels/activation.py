"""ReLU on the fast path: the forward into a reused output, the backward in one compiled pass.

Forward: ``np.maximum(x, 0)`` as the readable path, written into an :mod:`.outputs` buffer
(eval batches of hundreds of feature maps are megabytes, which a fresh array page-faults in).
Backward (torch's threshold_backward: dy where y > 0, else 0): NumPy needs a boolean temporary
and ``np.where`` (three passes); here one loop reads y and dy and writes dx. Same values bit
for bit: nothing is computed, only selected.
"""

from __future__ import annotations

import numpy as np

from . import outputs
from ._jit import jit


@jit
def _relu_backward(y, dy, dx):
    for i in range(y.size):
        dx[i] = dy[i] if y[i] > 0 else 0


def relu(x: np.ndarray) -> np.ndarray:
    """max(x, 0), NaN kept (C-contiguous)."""
    return np.maximum(x, 0, out=outputs.empty(x.shape, x.dtype))


def relu_backward(y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """dx = dy where y > 0, else 0 (shape of y, dtype of dy)."""
    dx = outputs.empty(y.shape, dy.dtype)
    _relu_backward(np.ascontiguousarray(y).reshape(-1), np.ascontiguousarray(dy).reshape(-1),
                   dx.reshape(-1))
    return dx
