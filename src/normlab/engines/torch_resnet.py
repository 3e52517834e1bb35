"""torch twins of :mod:`.numpy_resnet`'s layers (He et al. 2016 sec. 4.2), same state-dict keys.

The classes live at module level: a distributed worker rebuilds the model from the spec, so
nothing made at run time has to be pickled.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .spec import block_args, pad_channels, unknown
from .torch_layers import cnn_layer, torch_norm


class BasicBlock(torch.nn.Module):
    """Twin of :class:`normlab.engines.numpy_resnet.BasicBlock` (children conv1, norm1, conv2,
    norm2; torch's autograd does the backward)."""

    def __init__(self, layer: tuple):
        super().__init__()
        c_in, c_out, stride, norm, spatial, schedule, virtual = block_args(layer)
        self.stride, self.pad = stride, pad_channels(c_in, c_out)
        self.conv1 = cnn_layer(("conv", c_in, c_out, 3, 1, stride))
        self.norm1 = None if norm == "none" else torch_norm(norm, c_out, spatial, schedule,
                                                            virtual=virtual)
        self.conv2 = cnn_layer(("conv", c_out, c_out, 3, 1))
        self.norm2 = None if norm == "none" else torch_norm(norm, c_out, spatial, schedule,
                                                            virtual=virtual)

    def shortcut(self, x):
        s, (lo, hi) = self.stride, self.pad
        if s == 1 and lo == hi == 0:
            return x
        return F.pad(x[:, :, ::s, ::s], (0, 0, 0, 0, lo, hi))

    def forward(self, x):
        out = self.conv1(x)
        if self.norm1 is not None:
            out = self.norm1(out)
        out = self.conv2(F.relu(out))
        if self.norm2 is not None:
            out = self.norm2(out)
        return F.relu(out + self.shortcut(x))


class GlobalAvgPool(torch.nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))


def resnet_layer(layer: tuple) -> torch.nn.Module:
    """torch twin of :func:`.numpy_resnet.resnet_layer`."""
    if layer[0] == "resblock":
        return BasicBlock(layer)
    if layer[0] == "gap":
        return GlobalAvgPool()
    raise unknown(layer[0])
