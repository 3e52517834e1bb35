"""NumPy-engine modules of the CNN spec layers, and the norm layer chosen by name.

``get_norm(name, channels, spatial)`` builds from the one map both engines share,
:data:`.spec.NORM_LAYERS` (timm-style, ``layers/create_norm.py``), so the
experiments swap "batch" | "group" | "layer" | "instance" | "renorm" | "activation" without
copying model code; ``virtual`` (a group size) makes "batch" and "renorm" normalise each group
of that many images on its own (ghost BN: the GN paper's per-GPU statistics with the gradient
over the whole batch).
"""

from __future__ import annotations

import numpy as np

from .. import nn
from .spec import build_norm, conv_args, norm_args, unknown


class ActivationBatchNorm(nn.BatchNorm1d):
    """Per-activation BN on a feature map: (N, C, H, W) -> (N, C*H*W) -> BatchNorm1d -> back.

    The textbook's ``Affine``-style BN applied to a conv output (DLfS ``BatchNormalization``
    reshapes 4-D input to (N, -1)): every (channel, position) gets its own mean, variance,
    gamma and beta -- what the BN paper's sec. 3.2 replaces by per-feature-map statistics.
    """

    def __init__(self, channels: int, height: int, width: int, **kw):
        super().__init__(channels * height * width, **kw)
        self._in_shape = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._in_shape = x.shape
        return super().forward(x.reshape(len(x), -1)).reshape(x.shape)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return super().backward(dy.reshape(len(dy), -1)).reshape(self._in_shape)


class _Layers:
    """The classes spec.NORM_LAYERS builds the NumPy engine's norms from: ``normlab.nn``'s,
    looked up when a layer is built rather than when this module is imported, so a model is
    built from whatever class ``nn`` names at that moment (the mechanism tests put an identity
    in BatchNorm's place and must reach every experiment's model)."""

    ActivationBatchNorm = ActivationBatchNorm

    def __getattr__(self, name: str):
        return getattr(nn, name)


LAYERS = _Layers()


def get_norm(name: str, channels: int, spatial: tuple[int, int] | None = (1, 1),
             schedule: tuple | None = None, virtual: int | None = None) -> nn.Module:
    """The NumPy-engine norm layer ``name`` (:data:`.spec.NORM_LAYERS`) for ``channels``
    feature maps of size ``spatial`` (``spatial=None``: a (N, C) feature vector)."""
    return build_norm(LAYERS, name, channels, spatial, schedule, virtual)


def cnn_layer(layer: tuple, rng: np.random.Generator) -> nn.Module:
    """NumPy-engine module for a CNN spec layer; conv weights He-normal (fan-in), biases 0."""
    kind = layer[0]
    if kind == "conv":
        c_in, c_out, k, pad, stride = conv_args(layer)
        conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=pad, rng=rng)
        conv.weight.data[...] = nn.init.kaiming_normal(conv.weight.shape, rng=rng)
        conv.bias.data[...] = 0
        return conv
    if kind in ("norm", "norm1d"):
        return get_norm(*norm_args(layer))
    if kind == "maxpool":
        return nn.MaxPool2d(layer[1])
    if kind == "flatten":
        return nn.Flatten()
    raise unknown(kind)
