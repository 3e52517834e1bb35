"""A model as data: a spec is a tuple of layer tuples both engines read.

E.g. ``(("linear", 784, 100), ("bn1d", 100, 1e-5), ("sigmoid",), ...)``. Only the meaning of
the tuples lives here; :mod:`.numpy` and :mod:`.torch` each build their modules from them, and
the networks that write specs (MLP here; the CNN and ResNet in :mod:`normlab.runner`) do not
depend on either engine.

Layer kinds: "linear", "bn1d", "sigmoid", "relu", "dropout"; the CNN's "conv", "norm",
"norm1d", "maxpool", "flatten"; the ResNet's "resblock", "gap".
"""

from __future__ import annotations

from ..functional.renorm import RenormSchedule

Spec = tuple[tuple, ...]

NORMS = ("batch", "group", "layer", "instance", "renorm", "activation", "none")
CNN_KINDS = ("conv", "norm", "norm1d", "maxpool", "flatten")
RESNET_KINDS = ("resblock", "gap")
CHANNELS_PER_GROUP = 4


def mlp_spec(sizes: list[int], activation: str, batch_norm: bool, eps: float = 1e-5) -> Spec:
    """Linear [-> BatchNorm1d] -> activation for each hidden layer, then a Linear output.

    ``eps`` is BN's variance floor (PyTorch's 1e-5 unless a source states another). BN sits
    between the affine map and the nonlinearity, as in the paper (sec. 3.2: "we add the
    BN transform immediately before the nonlinearity").
    """
    layers: list[tuple] = []
    for n_in, n_out in zip(sizes[:-2], sizes[1:-1], strict=True):
        layers.append(("linear", n_in, n_out))
        if batch_norm:
            layers.append(("bn1d", n_out, eps))
        layers.append((activation,))
    layers.append(("linear", sizes[-2], sizes[-1]))
    return tuple(layers)


def last_index(spec: Spec, kind: str) -> int:
    """Position of the last layer of ``kind`` (e.g. the last hidden sigmoid)."""
    hits = [i for i, layer in enumerate(spec) if layer[0] == kind]
    if not hits:
        raise ValueError(f"spec: expected a {kind!r} layer, got kinds {[s[0] for s in spec]}")
    return hits[-1]


def group_count(channels: int) -> int:
    """GroupNorm groups: the GN paper's 32, but never fewer than 4 channels per group.

    With C <= 32, "32 groups or C" would make every group one channel, i.e. exactly
    InstanceNorm; GN paper Table 3 shows 2-16 channels per group within 0.5 points of the best.
    """
    return max(1, min(32, channels // CHANNELS_PER_GROUP))


def renorm_schedule(schedule: tuple | None) -> RenormSchedule | None:
    """(r_max, d_max, warmup, r_max_at, d_max_at) of a "renorm" spec layer as a schedule."""
    if schedule is None:
        return None
    r_max, d_max, warmup, r_at, d_at = schedule
    return RenormSchedule(r_max=r_max, d_max=d_max, warmup=int(warmup), r_max_at=int(r_at),
                          d_max_at=int(d_at))


def _dims(spatial) -> str:
    return "1d" if spatial is None else "2d"


# name -> how to build it from an engine's layer classes (``lib``: the namespace of
# numpy_layers.LAYERS or torch_layers.LAYERS, the same class names on both engines), for
# ``channels`` feature maps of size ``spatial`` (None: an (N, C) feature vector)
NORM_LAYERS = {
    "batch": lambda lib, c, spatial, schedule, virtual: getattr(
        lib, f"BatchNorm{_dims(spatial)}")(c, virtual_batch_size=virtual),
    "group": lambda lib, c, *_: lib.GroupNorm(group_count(c), c),
    # GroupNorm with one group: LayerNorm over (C, H, W) with per-channel gamma and beta, as
    # the GN paper compares it
    "layer": lambda lib, c, *_: lib.GroupNorm(1, c),
    "instance": lambda lib, c, *_: lib.InstanceNorm2d(c, affine=True),
    "renorm": lambda lib, c, spatial, schedule, virtual: getattr(
        lib, f"BatchRenorm{_dims(spatial)}")(c, schedule=renorm_schedule(schedule),
                                             virtual_batch_size=virtual),
    "activation": lambda lib, c, spatial, *_: lib.ActivationBatchNorm(c, *spatial),
}
MAPS_ONLY = ("instance", "activation")   # need feature maps


def build_norm(lib, name: str, channels: int, spatial: tuple[int, int] | None = (1, 1),
               schedule: tuple | None = None, virtual: int | None = None):
    """The norm layer ``name`` of :data:`NORM_LAYERS`, built from ``lib``'s classes."""
    flat = spatial is None
    if name not in NORM_LAYERS or (flat and name in MAPS_ONLY):
        raise ValueError(f"norm: expected one of {NORMS[:-1]}"
                         f"{' (instance/activation need feature maps)' if flat else ''}, "
                         f"got {name!r}")
    return NORM_LAYERS[name](lib, channels, spatial, schedule, virtual)


def conv_args(layer: tuple) -> tuple[int, int, int, int, int]:
    """(c_in, c_out, kernel, padding, stride) of a ("conv", c_in, c_out, k, pad[, stride])
    spec layer; the stride is optional so the specs (and run identities) written before the
    ResNet blocks needed it stay as they were."""
    _, c_in, c_out, k, pad, *rest = layer
    return c_in, c_out, k, pad, rest[0] if rest else 1


def norm_args(layer: tuple) -> tuple:
    """(name, channels, (h, w) or None for a feature vector, schedule, virtual) of a "norm" or
    "norm1d" spec layer: the arguments of either engine's norm factory."""
    if layer[0] == "norm":
        _, name, c, h, w, schedule, virtual = layer
        return name, c, (h, w), schedule, virtual
    _, name, c, schedule, virtual = layer
    return name, c, None, schedule, virtual


def block_args(layer: tuple) -> tuple:
    """(c_in, c_out, stride, norm, (h, w) after the block, schedule, virtual) of a
    ("resblock", ...) spec layer."""
    _, c_in, c_out, stride, norm, h, w, schedule, virtual = layer
    return c_in, c_out, stride, norm, (h, w), schedule, virtual


def pad_channels(c_in: int, c_out: int) -> tuple[int, int]:
    """Zero channels (before, after) of an option-A shortcut, split evenly as in the usual
    CIFAR implementations (``F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4))``)."""
    lo = (c_out - c_in) // 2
    return lo, c_out - c_in - lo


def unknown(kind) -> ValueError:
    return ValueError(f"spec: unknown layer kind {kind!r}")
