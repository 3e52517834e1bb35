"""NumPy-engine modules of the ResNet spec layers (He et al. 2016 sec. 4.2): the basic block
with its option-A shortcut and hand-written backward, and global average pooling.

Children carry the names of their torch twins (:mod:`.torch_resnet`), so the state-dict keys
match and the weights drawn here load there unchanged.
"""

from __future__ import annotations

import numpy as np

from .. import nn
from .numpy_layers import cnn_layer, get_norm
from .spec import block_args, pad_channels, unknown


class BasicBlock(nn.Module):
    """conv3x3 (stride s) -> norm -> ReLU -> conv3x3 -> norm, plus the shortcut, -> ReLU.

    Children ``conv1``, ``norm1``, ``conv2``, ``norm2`` (no norms for "none"): the keys of
    :class:`.torch_resnet.BasicBlock`. The backward is the chain rule written out: the output
    gradient goes through the ReLU, then both through the residual branch (layer by layer,
    in reverse) and through the shortcut's adjoint, and the two input gradients add.
    """

    def __init__(self, layer: tuple, rng: np.random.Generator):
        super().__init__()
        c_in, c_out, stride, norm, spatial, schedule, virtual = block_args(layer)
        self.stride, self.pad = stride, pad_channels(c_in, c_out)
        self.conv1 = cnn_layer(("conv", c_in, c_out, 3, 1, stride), rng)
        if norm != "none":
            self.norm1 = get_norm(norm, c_out, spatial, schedule, virtual=virtual)
        self.conv2 = cnn_layer(("conv", c_out, c_out, 3, 1), rng)
        if norm != "none":
            self.norm2 = get_norm(norm, c_out, spatial, schedule, virtual=virtual)
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()
        norms = (self.norm1, self.norm2) if norm != "none" else (None, None)
        self._branch = [m for m in (self.conv1, norms[0], self.relu1, self.conv2, norms[1])
                        if m is not None]
        self._in_shape = None

    def shortcut(self, x: np.ndarray) -> np.ndarray:
        """Option A: identity, or every stride-th pixel with zero channels around it."""
        s, (lo, hi) = self.stride, self.pad
        if s == 1 and lo == hi == 0:
            return x
        return np.pad(x[:, :, ::s, ::s], ((0, 0), (lo, hi), (0, 0), (0, 0)))

    def shortcut_backward(self, dy: np.ndarray) -> np.ndarray:
        """Adjoint of :meth:`shortcut`: drop the padded channels, put the rest back on the
        pixels the stride kept (the others got no gradient through this path)."""
        s, (lo, hi) = self.stride, self.pad
        if s == 1 and lo == hi == 0:
            return dy
        dx = np.zeros(self._in_shape, dtype=dy.dtype)
        dx[:, :, ::s, ::s] = dy[:, lo:dy.shape[1] - hi]
        return dx

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._in_shape = x.shape
        out = x
        for layer in self._branch:
            out = layer(out)
        return self.relu2(out + self.shortcut(x))

    def backward(self, dy: np.ndarray) -> np.ndarray:
        d = self.relu2.backward(dy)
        dx = self.shortcut_backward(d)
        for layer in reversed(self._branch):
            d = layer.backward(d)
        return d + dx


class GlobalAvgPool(nn.Module):
    """(N, C, H, W) -> (N, C): the mean over each feature map (torch: ``x.mean((2, 3))``)."""

    def __init__(self):
        super().__init__()
        self._shape = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._shape = x.shape
        return x.mean(axis=(2, 3), dtype=x.dtype)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dy = self._check_dy(dy, None if self._shape is None else self._shape[:2])
        h, w = self._shape[2:]
        share = dy / np.asarray(h * w, dtype=dy.dtype)
        return np.broadcast_to(share[:, :, None, None], self._shape).copy()



def resnet_layer(layer: tuple, rng: np.random.Generator) -> nn.Module:
    """NumPy-engine module for a "resblock" / "gap" spec layer."""
    if layer[0] == "resblock":
        return BasicBlock(layer, rng)
    if layer[0] == "gap":
        return GlobalAvgPool()
    raise unknown(layer[0])
