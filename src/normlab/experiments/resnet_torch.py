"""torch twins of :mod:`.resnet`'s layers (He et al. 2016 sec. 4.2), same state-dict keys.

A module of its own so torch is imported only when a torch model is built, and so the classes
live at module level (a distributed worker rebuilds the model from the spec; nothing made at
run time has to be pickled).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .cnn import get_norm, torch_layer
from .resnet import block_args, pad_channels


class BasicBlock(torch.nn.Module):
    """Twin of :class:`normlab.experiments.resnet.BasicBlock` (children conv1, norm1, conv2,
    norm2; torch's autograd does the backward)."""

    def __init__(self, layer: tuple):
        super().__init__()
        c_in, c_out, stride, norm, spatial, schedule, virtual = block_args(layer)
        self.stride, self.pad = stride, pad_channels(c_in, c_out)
        self.conv1 = torch_layer(("conv", c_in, c_out, 3, 1, stride))
        self.norm1 = None if norm == "none" else get_norm(norm, c_out, spatial, schedule,
                                                          engine="torch", virtual=virtual)
        self.conv2 = torch_layer(("conv", c_out, c_out, 3, 1))
        self.norm2 = None if norm == "none" else get_norm(norm, c_out, spatial, schedule,
                                                          engine="torch", virtual=virtual)

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


def layer(spec_layer: tuple) -> torch.nn.Module:
    if spec_layer[0] == "resblock":
        return BasicBlock(spec_layer)
    if spec_layer[0] == "gap":
        return GlobalAvgPool()
    raise ValueError(f"spec: unknown layer kind {spec_layer[0]!r}")
