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
-> 4 instead). The norm after each convolution is one of :mod:`.cnn`'s ("batch" with
ghost groups, "renorm" with its schedule, "group", "layer", "instance", "none"), and the
convolutions keep their bias as :mod:`.cnn`'s do, so "none" differs only by the norm layers.

The spec layers ("resblock", "gap") are built by :mod:`normlab.engines` beside :mod:`.cnn`'s;
the NumPy block (:mod:`normlab.engines.numpy_resnet`) has a hand-written backward, and its
torch twin has the same state-dict keys, so the weights drawn for the NumPy model load into
torch unchanged.
"""

from __future__ import annotations

from ..engines.spec import NORMS, block_args

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
