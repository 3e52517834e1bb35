"""A ResNet-20-style CNN for both engines (He, Zhang, Ren, Sun 2016, sec. 4.2, CIFAR variant).

He et al.'s CIFAR-10 network: a 3x3 convolution to 16 channels, then three stages of n = 3
basic blocks with 16, 32 and 64 channels (6n + 2 = 20 weighted layers), the first block of
stages 2 and 3 halving the feature map with stride 2, global average pooling and one Linear
layer. Shortcuts are option A (sec. 4.2: "identity shortcuts in all cases"): the identity where
the shape is kept; where it changes, the input subsampled with stride 2 and its channels
zero-padded to the new width (no parameters).

Two adaptations, both for the inputs here: one grey channel in (MNIST-like images, 28 -> 14 ->
7, so the last stage is 7x7 like the GN paper's ResNet-50's), and a stage strides only while the
feature map's side is above :data:`MIN_SIDE` -- 8x8 digits would otherwise end at 2x2 (8 -> 4
-> 4 instead). The norm after each convolution comes from :func:`.cnn.get_norm` ("batch" with
ghost groups, "renorm" with its schedule, "group", "layer", "instance", "none"), and the
convolutions keep their bias as :mod:`.cnn`'s do, so "none" differs only by the norm layers.

The spec layers ("resblock", "gap") plug into :func:`.models.build_numpy` / ``build_torch``
beside :mod:`.cnn`'s; the NumPy block has a hand-written backward, and its torch twin
(:mod:`.resnet_torch`) has the same state-dict keys, so the weights drawn here load there
unchanged.
"""

from __future__ import annotations

import numpy as np

from .. import nn
from .cnn import NORMS, get_norm, numpy_layer

KINDS = ("resblock", "gap")
STAGES = (16, 32, 64)
BLOCKS = 3          # per stage: 6 * 3 + 2 = 20 layers
MIN_SIDE = 4        # a stage strides only while the feature map's side is above this


def resnet_spec(image_shape: tuple[int, int], n_classes: int, norm: str,
                schedule: tuple | None = None, virtual: int | None = None,
                stages: tuple[int, ...] = STAGES, blocks: int = BLOCKS) -> tuple:
    """conv3x3 16 -> norm -> ReLU, ``blocks`` basic blocks per entry of ``stages``, global
    average pool, Linear. ``schedule`` / ``virtual``: as in :func:`.cnn.cnn_spec`."""
    if norm not in NORMS:
        raise ValueError(f"norm: expected one of {NORMS}, got {norm!r}")
    sched = tuple(schedule) if schedule else None
    h, w = image_shape
    c_in = stages[0]
    layers: list[tuple] = [("conv", 1, c_in, 3, 1)]
    if norm != "none":
        layers.append(("norm", norm, c_in, h, w, sched, virtual))
    layers.append(("relu",))
    for i, c in enumerate(stages):
        for b in range(blocks):
            stride = 2 if i > 0 and b == 0 and min(h, w) > MIN_SIDE else 1
            h, w = -(-h // stride), -(-w // stride)
            layers.append(("resblock", c_in, c, stride, norm, h, w, sched, virtual))
            c_in = c
    layers += [("gap",), ("linear", c_in, n_classes)]
    return tuple(layers)


def block_args(layer: tuple) -> tuple:
    """(c_in, c_out, stride, norm, (h, w) after the block, schedule, virtual)."""
    _, c_in, c_out, stride, norm, h, w, schedule, virtual = layer
    return c_in, c_out, stride, norm, (h, w), schedule, virtual


def pad_channels(c_in: int, c_out: int) -> tuple[int, int]:
    """Zero channels (before, after) of an option-A shortcut, split evenly as in the usual
    CIFAR implementations (``F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4))``)."""
    lo = (c_out - c_in) // 2
    return lo, c_out - c_in - lo


class BasicBlock(nn.Module):
    """conv3x3 (stride s) -> norm -> ReLU -> conv3x3 -> norm, plus the shortcut, -> ReLU.

    Children ``conv1``, ``norm1``, ``conv2``, ``norm2`` (no norms for "none"): the keys of
    :class:`.resnet_torch.BasicBlock`. The backward is the chain rule written out: the output
    gradient goes through the ReLU, then both through the residual branch (layer by layer,
    in reverse) and through the shortcut's adjoint, and the two input gradients add.
    """

    def __init__(self, layer: tuple, rng: np.random.Generator):
        super().__init__()
        c_in, c_out, stride, norm, spatial, schedule, virtual = block_args(layer)
        self.stride, self.pad = stride, pad_channels(c_in, c_out)
        self.conv1 = numpy_layer(("conv", c_in, c_out, 3, 1, stride), rng)
        if norm != "none":
            self.norm1 = get_norm(norm, c_out, spatial, schedule, virtual=virtual)
        self.conv2 = numpy_layer(("conv", c_out, c_out, 3, 1), rng)
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


def numpy_block(layer: tuple, rng: np.random.Generator) -> nn.Module:
    """NumPy-engine module for a "resblock" / "gap" spec layer."""
    if layer[0] == "resblock":
        return BasicBlock(layer, rng)
    if layer[0] == "gap":
        return GlobalAvgPool()
    raise ValueError(f"spec: unknown layer kind {layer[0]!r}")


def torch_block(layer: tuple):
    """torch twin of :func:`numpy_block` (torch imported only here)."""
    from . import resnet_torch

    return resnet_torch.layer(layer)


def stage_sides(image_shape: tuple[int, int]) -> list[tuple[int, int]]:
    """(h, w) of each stage's feature maps for ``image_shape`` inputs."""
    blocks = [block_args(layer) for layer in resnet_spec(image_shape, 10, "none")
              if layer[0] == "resblock"]
    return [blocks[i * BLOCKS][4] for i in range(len(STAGES))]


def last_side(image_shape: tuple[int, int]) -> tuple[int, int]:
    return stage_sides(image_shape)[-1]


def short_name(image_shape: tuple[int, int]) -> str:
    """The network in a few words, for the experiments' scale notes."""
    return f"ResNet-20-style CNN on full {'x'.join(map(str, image_shape))} images"


def describe(image_shape: tuple[int, int], norm_text: str = "norm") -> str:
    """The architecture in words, for the experiments' setup text."""
    sides = [f"{h}x{w}" for h, w in stage_sides(image_shape)]
    h, w = image_shape
    return (f"a ResNet-20-style CNN (He et al. 2016 sec. 4.2, CIFAR variant) on {h}x{w} inputs: "
            f"conv3x3 {STAGES[0]} -> {norm_text} -> ReLU, 3 stages of {BLOCKS} basic blocks "
            f"[conv3x3 -> {norm_text} -> ReLU -> conv3x3 -> {norm_text}, + shortcut, -> ReLU] "
            f"with {'/'.join(map(str, STAGES))} channels (feature maps "
            f"{'/'.join(sides)}; stride 2 at the first block of a stage while "
            f"the side is above {MIN_SIDE}), option-A shortcuts (identity; subsampled and "
            f"zero-padded channels where the shape changes), global average pool, Linear; "
            f"He-normal conv weights")
