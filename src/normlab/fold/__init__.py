"""Folding BatchNorm away for inference (Ioffe & Szegedy 2015, Alg. 2, line 11).

At inference BN is a fixed per-channel affine map, so it merges into the preceding Linear/Conv
(weights scaled per output channel, bias shifted) or, where exact, into the following one; what
cannot merge becomes one :class:`Affine`. ``fold_bn``/``bn_to_affine`` work on NumPy-engine
models; ``fold_into_preceding``/``fold_into_following`` are the pure float64 weight math, shared
with ``normlab.torch.fold``.
"""

from __future__ import annotations

from .affine import Affine
from .check import FoldedLinearCheck
from .engine import bn_to_affine, fold_bn
from .report import FoldReport, FoldResult
from .weights import fold_into_following, fold_into_preceding

__all__ = ["Affine", "FoldReport", "FoldResult", "FoldedLinearCheck", "bn_to_affine", "fold_bn",
           "fold_into_following", "fold_into_preceding"]
