"""A small CNN whose normalization family is chosen by name, as a spec for both engines.

The norm is one of :data:`normlab.engines.spec.NORMS` ("batch" | "group" | "layer" |
"instance" | "renorm" | "activation" | "none"); ``virtual`` (a group size) makes "batch" and
"renorm" normalise each group of that many images on its own (ghost BN: the GN paper's
per-GPU statistics with the gradient over the whole batch). :mod:`normlab.engines` builds the
spec's layers ("conv", "norm", "norm1d", "maxpool", "flatten") in either engine with the same
state-dict keys, so the weights drawn for the NumPy model load into torch unchanged.
"""

from __future__ import annotations

import numpy as np

from ..engines.spec import NORMS

CHANNELS = (16, 32)


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
