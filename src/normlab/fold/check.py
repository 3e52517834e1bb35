"""``FoldedLinearCheck``: what takes the place of a BatchNorm1d folded into a neighbouring Linear.

The fold is exact only on (N, features) activations (:func:`normlab.fold.rules.not_two_dim`).
A BatchNorm1d also accepts (N, C, L), where it normalises dim 1 while the Linear maps the last
dim; when C happens to equal the features both models run, and the folded one would silently
compute something else. The check passes 2-D arrays through and refuses any other rank, as
``normlab.torch``'s folded models do.
"""

from __future__ import annotations

import numpy as np

from ..nn.module import Module
from .rules import not_two_dim


class FoldedLinearCheck(Module):
    """Identity on 2-D input; ``ValueError`` naming the folded BatchNorm on any other rank."""

    def __init__(self, bn_name: str):
        super().__init__()
        if not isinstance(bn_name, str):
            raise TypeError(f"bn_name: expected the folded BatchNorm's name (str), got "
                            f"{type(bn_name).__name__}")
        self.bn_name = bn_name
        self._shape: tuple[int, ...] | None = None   # the last input's, for checking dy

    def forward(self, x: np.ndarray) -> np.ndarray:
        if np.ndim(x) != 2:
            raise ValueError(not_two_dim(self.bn_name, np.shape(x)))
        self._shape = np.shape(x)
        return x

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return self._check_dy(dy, self._shape)

    def extra_repr(self) -> str:
        return repr(self.bn_name)
