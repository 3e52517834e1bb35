"""``Affine``: the per-channel multiply-add an eval-mode BatchNorm is (Alg. 2, line 11).

y = x * scale + shift with one (scale, shift) per channel on axis 1, for inputs (N, C, ...).
What a BatchNorm that cannot be merged into a neighbouring layer becomes after folding.
"""

from __future__ import annotations

import numpy as np

from ..functional.batch import channel_axes, check_input, per_channel
from ..functional.stats import compute_dtype
from ..nn.module import Module, Parameter


class Affine(Module):
    """Per-channel ``y = x * scale + shift``; ``scale`` and ``shift`` are trainable Parameters."""

    def __init__(self, scale: np.ndarray, shift: np.ndarray, dtype=np.float32):
        super().__init__()
        for name, v in (("scale", scale), ("shift", shift)):
            if not isinstance(v, np.ndarray) or v.ndim != 1:
                raise ValueError(f"{name}: expected a 1D numpy.ndarray (one value per channel), "
                                 f"got {getattr(v, 'shape', type(v).__name__)}")
        if scale.shape != shift.shape:
            raise ValueError(f"shift: expected shape {scale.shape} (as scale), got {shift.shape}")
        self.num_features = scale.shape[0]
        self.scale = Parameter(scale.astype(dtype))
        self.shift = Parameter(shift.astype(dtype))
        self._x: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        # Same arithmetic as functional.batch_norm_eval: float16 is computed in float32.
        x = check_input(x, self.num_features)
        acc = compute_dtype(x.dtype)
        y = x * per_channel(self.scale.data.astype(acc, copy=False), x.ndim)
        y += per_channel(self.shift.data.astype(acc, copy=False), x.ndim)
        self._x = x
        return y.astype(x.dtype, copy=False)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dx = dy * scale;  dscale = sum(dy * x);  dshift = sum(dy) over all axes but C."""
        x = self._x
        dy = self._check_dy(dy, None if x is None else x.shape)
        axes = channel_axes(dy.ndim)
        self.scale.accumulate((dy * x).sum(axis=axes))
        self.shift.accumulate(dy.sum(axis=axes))
        return (dy * per_channel(self.scale.data, dy.ndim)).astype(x.dtype, copy=False)

    def extra_repr(self) -> str:
        return f"{self.num_features}"
