"""A small CNN whose normalization family is chosen by name, for both engines.

``get_norm(name, channels, spatial)`` is a timm-style registry (``layers/create_norm.py``) so the
experiments swap "batch" | "group" | "layer" | "instance" | "renorm" | "activation" | "none"
without copying model code; ``virtual`` (a group size) makes "batch" and "renorm" normalise
each group of that many images on its own (ghost BN: the GN paper's per-GPU statistics with
the gradient over the whole batch). The spec layers defined here ("conv", "norm", "norm1d",
"maxpool", "flatten") plug into :func:`normlab.experiments.models.build_numpy` /
``build_torch``; the torch twins have the same state-dict keys, so the weights drawn for the
NumPy model load into torch unchanged.
"""

from __future__ import annotations

import numpy as np

from .. import nn
from ..functional.renorm import RenormSchedule

NORMS = ("batch", "group", "layer", "instance", "renorm", "activation", "none")
KINDS = ("conv", "norm", "norm1d", "maxpool", "flatten")
CHANNELS = (16, 32)
CHANNELS_PER_GROUP = 4


def group_count(channels: int) -> int:
    """GroupNorm groups: the GN paper's 32, but never fewer than 4 channels per group.

    With C <= 32, "32 groups or C" would make every group one channel, i.e. exactly
    InstanceNorm; GN paper Table 3 shows 2-16 channels per group within 0.5 points of the best.
    """
    return max(1, min(32, channels // CHANNELS_PER_GROUP))


def cnn_spec(image_shape: tuple[int, int], n_classes: int, norm: str,
             channels: tuple[int, ...] = CHANNELS, schedule: tuple | None = None,
             hidden: int | None = None, virtual: int | None = None) -> tuple:
    """[conv3x3(pad 1) -> norm -> ReLU -> maxpool2] per entry of ``channels``, then
    [Linear -> norm -> ReLU] to ``hidden`` units if given, then Linear.

    3x3 convolutions with padding 1 and 2x2 pooling work for 8x8 digits (8 -> 4 -> 2) and
    MNIST pooled to 14x14 (14 -> 7 -> 3); ``image_shape`` is the (pooled) input size.
    ``schedule`` = (r_max, d_max, warmup, r_max_at, d_max_at) for "renorm"; ``virtual`` = the
    group size of ghost "batch"/"renorm" normalisation (None: the whole batch). The
    convolutions keep their bias even before a norm, so "none" differs from the normalised nets
    only by the norm layers.
    """
    if norm not in NORMS:
        raise ValueError(f"norm: expected one of {NORMS}, got {norm!r}")
    h, w = image_shape
    c_in, layers = 1, []
    sched = tuple(schedule) if schedule else None
    for c in channels:
        layers.append(("conv", c_in, c, 3, 1))
        if norm != "none":
            layers.append(("norm", norm, c, h, w, sched, virtual))
        layers += [("relu",), ("maxpool", 2)]
        c_in, h, w = c, h // 2, w // 2
    layers.append(("flatten",))
    features = c_in * h * w
    if hidden:
        layers.append(("linear", features, hidden))
        if norm not in ("none", "instance"):   # one value per channel: nothing to normalise
            layers.append(("norm1d", norm, hidden, sched, virtual))
        layers.append(("relu",))
        features = hidden
    layers.append(("linear", features, n_classes))
    return tuple(layers)


def norm_param_count(spec: tuple) -> int:
    """Trainable parameters of the norm layers (gamma and beta) in ``spec``."""
    total = 0
    for layer in spec:
        if layer[0] == "norm":
            name, c, h, w = layer[1:5]
            total += 2 * (c * h * w if name == "activation" else c)
        elif layer[0] == "norm1d":
            total += 2 * layer[2]
    return total


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


def get_norm(name: str, channels: int, spatial: tuple[int, int] | None = (1, 1),
             schedule: tuple | None = None, engine: str = "numpy", virtual: int | None = None):
    """The norm layer ``name`` for ``channels`` feature maps of size ``spatial`` on ``engine``
    (``spatial=None``: a (N, C) feature vector).

    "layer" is GroupNorm with one group (LayerNorm over (C, H, W) with per-channel gamma and
    beta, as the GN paper compares it); "instance" is InstanceNorm2d with affine parameters.
    """
    if engine == "torch":
        return _torch_norm(name, channels, spatial, schedule, virtual)
    flat = spatial is None
    if name == "batch":
        return (nn.BatchNorm1d if flat else nn.BatchNorm2d)(channels, virtual_batch_size=virtual)
    if name == "group":
        return nn.GroupNorm(group_count(channels), channels)
    if name == "layer":
        return nn.GroupNorm(1, channels)
    if name == "instance" and not flat:
        return nn.InstanceNorm2d(channels, affine=True)
    if name == "renorm":
        return (nn.BatchRenorm1d if flat else nn.BatchRenorm2d)(
            channels, schedule=_schedule(schedule), virtual_batch_size=virtual)
    if name == "activation" and not flat:
        return ActivationBatchNorm(channels, *spatial)
    raise ValueError(f"norm: expected one of {NORMS[:-1]}"
                     f"{' (instance/activation need feature maps)' if flat else ''}, "
                     f"got {name!r}")


def _schedule(schedule: tuple | None) -> RenormSchedule | None:
    if schedule is None:
        return None
    r_max, d_max, warmup, r_at, d_at = schedule
    return RenormSchedule(r_max=r_max, d_max=d_max, warmup=int(warmup), r_max_at=int(r_at),
                          d_max_at=int(d_at))


def _torch_norm(name: str, channels: int, spatial: tuple[int, int] | None, schedule, virtual):
    import torch

    from .. import torch as nt

    flat = spatial is None
    if name == "batch" and virtual:
        return (nt.GhostBatchNorm1d if flat else nt.GhostBatchNorm2d)(channels, virtual)
    if name == "batch":
        return (torch.nn.BatchNorm1d if flat else torch.nn.BatchNorm2d)(channels)
    if name == "group":
        return torch.nn.GroupNorm(group_count(channels), channels)
    if name == "layer":
        return torch.nn.GroupNorm(1, channels)
    if name == "instance" and not flat:
        return torch.nn.InstanceNorm2d(channels, affine=True)
    if name == "renorm":
        return (nt.BatchRenorm1d if flat else nt.BatchRenorm2d)(
            channels, schedule=_schedule(schedule), virtual_batch_size=virtual)
    if name == "activation" and not flat:
        return _torch_activation_bn()(channels * spatial[0] * spatial[1])
    raise ValueError(f"norm: expected one of {NORMS[:-1]}, got {name!r}")


def _torch_activation_bn():
    """torch twin of :class:`ActivationBatchNorm` (a class made on first use: torch is lazy)."""
    global _TORCH_ACTIVATION_BN
    if _TORCH_ACTIVATION_BN is None:
        import torch

        class TorchActivationBatchNorm(torch.nn.BatchNorm1d):
            def forward(self, x):
                return super().forward(x.reshape(len(x), -1)).reshape(x.shape)

        _TORCH_ACTIVATION_BN = TorchActivationBatchNorm
    return _TORCH_ACTIVATION_BN


_TORCH_ACTIVATION_BN = None


def conv_args(layer: tuple) -> tuple[int, int, int, int, int]:
    """(c_in, c_out, kernel, padding, stride) of a ("conv", c_in, c_out, k, pad[, stride])
    spec layer; the stride is optional so the specs (and run identities) written before the
    ResNet blocks needed it stay as they were."""
    _, c_in, c_out, k, pad, *rest = layer
    return c_in, c_out, k, pad, rest[0] if rest else 1


def numpy_layer(layer: tuple, rng: np.random.Generator):
    """NumPy-engine module for a CNN spec layer; conv weights He-normal (fan-in), biases 0."""
    kind = layer[0]
    if kind == "conv":
        c_in, c_out, k, pad, stride = conv_args(layer)
        conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=pad, rng=rng)
        conv.weight.data[...] = nn.init.kaiming_normal(conv.weight.shape, rng=rng)
        conv.bias.data[...] = 0
        return conv
    if kind == "norm":
        _, name, c, h, w, schedule, virtual = layer
        return get_norm(name, c, (h, w), schedule, virtual=virtual)
    if kind == "norm1d":
        _, name, c, schedule, virtual = layer
        return get_norm(name, c, None, schedule, virtual=virtual)
    if kind == "maxpool":
        return nn.MaxPool2d(layer[1])
    if kind == "flatten":
        return nn.Flatten()
    raise ValueError(f"spec: unknown layer kind {kind!r}")


def torch_layer(layer: tuple):
    import torch

    kind = layer[0]
    if kind == "conv":
        c_in, c_out, k, pad, stride = conv_args(layer)
        return torch.nn.Conv2d(c_in, c_out, k, stride=stride, padding=pad)
    if kind == "norm":
        _, name, c, h, w, schedule, virtual = layer
        return get_norm(name, c, (h, w), schedule, engine="torch", virtual=virtual)
    if kind == "norm1d":
        _, name, c, schedule, virtual = layer
        return get_norm(name, c, None, schedule, engine="torch", virtual=virtual)
    if kind == "maxpool":
        return torch.nn.MaxPool2d(layer[1])
    if kind == "flatten":
        return torch.nn.Flatten()
    raise ValueError(f"spec: unknown layer kind {kind!r}")


MAX_SIDE = 16


def image_shape(shape: tuple[int, int], pool: bool = True) -> tuple[int, int]:
    """The CNN's input size: images wider than 16 px are 2x2 average-pooled (28 -> 14), unless
    ``pool`` is False (the paper-size ResNets take full 28x28 images)."""
    h, w = shape
    return (h // 2, w // 2) if pool and max(h, w) > MAX_SIDE else (h, w)


def as_images(x: np.ndarray, pool: bool = True) -> np.ndarray:
    """(N, H, W) images -> (N, 1, H', W'), the CNN's input layout, 2x2-pooled if large.

    The pooling keeps the NumPy-engine CNN runs within minutes on two cores; digits (8x8)
    are used as they are, and so is everything with ``pool=False``.
    """
    h, w = image_shape(x.shape[1:], pool)
    if (h, w) != x.shape[1:]:
        x = x[:, :2 * h, :2 * w].reshape(len(x), h, 2, w, 2).mean(axis=(2, 4))
    return np.ascontiguousarray(x.reshape(len(x), 1, h, w), dtype=np.float32)
