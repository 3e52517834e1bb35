"""The eval forward of a Sequential, with each [BatchNorm2d ->] ReLU -> MaxPool2d(2) run fused.

The NumPy engine's ``forward_eval`` (every validation and test evaluation of the experiments)
runs here. A group of layers -- an eval-mode BatchNorm2d that normalises with its running
statistics, then ReLU, then a 2x2 max pool with stride 2 and no padding, or the last two alone
-- becomes one compiled pass (:mod:`normlab.kernels.fused`) that gives the layers' own bits; on
the experiments' CNN that is a fifth of an eval forward's time. Everything else, and any group
whose input holds a NaN, runs layer by layer.

Only this function fuses: ``model(x)`` keeps running every layer and keeping what an eval-mode
backward needs, which a fused group does not keep (its layers' caches are left as they were).
"""

from __future__ import annotations

import numpy as np

from .. import kernels
from .activation import ReLU
from .batchnorm import BatchNorm2d
from .module import Sequential
from .pool import MaxPool2d


def forward_eval(model: Sequential, x: np.ndarray, tap: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """(output, input of layer ``tap`` or None) of ``model`` in eval mode; the model is left
    in eval mode."""
    model.eval()
    layers = list(model)
    tapped = None
    i = 0
    while i < len(layers):
        if i == tap:
            tapped = x
        size = max(_group(layers, i, tap), 1)
        y = _fused(layers[i:i + size], x) if size > 1 else None
        if y is None:   # no group, or one the kernel declined: its layers one by one
            y = x
            for layer in layers[i:i + size]:
                y = layer(y)
        x, i = y, i + size
    return x, tapped


def _group(layers: list, i: int, tap: int | None) -> int:
    """How many layers from ``i`` on form a fusable group (3 with the BN, 2 without; 0: none);
    a tap inside a group, which needs the input of one of its later layers, keeps it apart."""
    start = i + (type(layers[i]) is BatchNorm2d)
    if start + 1 >= len(layers) or type(layers[start]) is not ReLU \
            or not _is_2x2(layers[start + 1]):
        return 0
    size = start + 2 - i
    return 0 if tap is not None and i < tap < i + size else size


def _is_2x2(layer) -> bool:
    return (type(layer) is MaxPool2d and layer.kernel_size == (2, 2)
            and layer.stride == (2, 2) and layer.padding == (0, 0))


def _fused(group: list, x) -> np.ndarray | None:
    """The group's output from one fused pass, or None where its layers must run: no kernel
    for ``x``, a BN that normalises with batch statistics (no running buffers), an input too
    small to pool (the layers raise their errors) or a NaN."""
    if not isinstance(x, np.ndarray) or x.ndim != 4 or min(x.shape[2:]) < 2:
        return None
    fast = kernels.for_array(x, "fused")
    if fast is None:
        return None
    affine = None
    if len(group) == 3:
        affine = group[0].eval_affine(x)
        if affine is None:
            return None
    return fast.relu_max_pool_2x2(np.ascontiguousarray(x), affine)
