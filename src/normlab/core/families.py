"""The normalisation families, each declared once; every layer's table of them is read from here.

A family is one way of choosing which elements share a mean and a scale (batch: per channel
over the batch, Ioffe & Szegedy 2015 Alg. 1; layer: per sample over the trailing dims, Ba et al.
2016 eq. 4; group: per sample and channel group, Wu & He 2018 eq. 1). Its declaration names the
pieces every layer needs, as plain strings: this module is the bottom layer (:mod:`normlab.core`)
and imports nothing of normlab, and each layer resolves only the names of its own layer or below
(so no import runs up, and no two layers need each other):

* :mod:`normlab.reference` ``<name>``: the NumPy implementation (``forward``/``backward``, or
  ``train``/``evaluate``/``backward`` for batch), which always exists;
* :mod:`normlab.kernels` ``kernel``: an optional numba twin with the same interface. Without
  one the reference serves every input (:func:`normlab.kernels.for_array` answers ``None``);
* :mod:`normlab.functional` ``forward``/``backward``: the validated API;
* :mod:`normlab.nn` ``modules``: the layer classes, with the constructor arguments they share
  with the ``torch.nn`` class of the same name (:mod:`normlab.torch.convert`, the parity tests)
  and the rule :mod:`normlab.fold.declared` derives their state-dict shapes by;
* :mod:`normlab.bench` ``bench``: the shapes ``normlab bench`` times.

Adding a normalisation is adding one :class:`Family` to :data:`FAMILIES` and writing the pieces
it names (README, "Adding a normalisation").
"""

from __future__ import annotations

from dataclasses import dataclass

# How fold.declared derives a module's parameter and buffer shapes from its arguments:
# "batch": (num_features,) weight/bias if affine, running statistics if tracked;
# "channels": (num_channels,) weight/bias if affine;
# "trailing": normalized_shape weight if elementwise_affine, and bias if the ``bias`` flag is on.
SHAPE_RULES = ("batch", "channels", "trailing")


@dataclass(frozen=True)
class Module:
    """One :mod:`normlab.nn` class of a family.

    ``args``/``kwargs``: the constructor arguments read off an instance (attributes of those
    names; ``bias`` is read as "has a bias") that rebuild it in either library. ``torch``: torch.nn
    has a class of this name taking them (conversion and parity); ``dtype``: the constructor takes
    ``dtype=``.
    """

    name: str
    args: tuple[str, ...]
    kwargs: tuple[str, ...]
    shapes: str
    torch: bool = True
    dtype: bool = True


@dataclass(frozen=True)
class BenchCase:
    """A shape ``normlab bench`` times (``tiny``: the shape of its smoke run)."""

    label: str
    shape: tuple[int, ...]
    tiny: tuple[int, ...]
    channels_last: bool = False
    note: str = ""


@dataclass(frozen=True)
class Family:
    """One normalisation family (see the module docstring for where each name is looked up).

    ``param``: where the affine parameters live, ``"channel"`` (axis 1) or ``"trailing"`` (the
    normalized_shape dims); ``groups``: the structural argument the bench passes after x when the
    family takes a group count (None: the trailing dim as normalized_shape); ``bias``: the
    functional forward takes a bias after the weight.
    """

    name: str
    kernel: str | None
    forward: str
    backward: str
    modules: tuple[Module, ...]
    param: str = "channel"
    bias: bool = True
    groups: int | None = None
    bench: tuple[BenchCase, ...] = ()


_BN_ARGS = ("num_features",), ("eps", "momentum", "affine", "track_running_stats")

FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("batch", "batch", "batch_norm_train", "batch_norm_backward", modules=(
        *(Module(f"BatchNorm{d}d", *_BN_ARGS, "batch") for d in (1, 2, 3)),
        *(Module(f"InstanceNorm{d}d", *_BN_ARGS, "batch") for d in (1, 2, 3)),
        *(Module(f"BatchRenorm{d}d", *_BN_ARGS, "batch", torch=False) for d in (1, 2))),
        bench=(BenchCase("BN1d", (256, 1024), (16, 8)),
               BenchCase("BN1d", (60, 100), ()),
               BenchCase("BN2d", (32, 64, 56, 56), (4, 3, 5, 5)),
               BenchCase("BN2d", (8, 256, 28, 28), ()),
               BenchCase("BN2d NHWC", (32, 64, 56, 56), (4, 3, 5, 5), channels_last=True,
                         note="(N,C,H,W) view of a contiguous (32,56,56,64) array"))),
    Family("layer", "layer", "layer_norm_forward", "layer_norm_backward", modules=(
        Module("LayerNorm", ("normalized_shape",), ("eps", "elementwise_affine", "bias"),
               "trailing"),), param="trailing",
        bench=(BenchCase("LayerNorm", (16, 512, 768), (2, 4, 8),
                         note="shrunk from (64,512,768) to 16 sequences: 4 arrays of 400 MB "
                              "would not fit beside the other jobs on this machine"),)),
    Family("group", "group", "group_norm_forward", "group_norm_backward", modules=(
        Module("GroupNorm", ("num_groups", "num_channels"), ("eps", "affine"), "channels"),),
        groups=32, bench=(BenchCase("GroupNorm(32)", (16, 256, 28, 28), (2, 32, 2, 2)),)),
    # Zhang & Sennrich 2019: LayerNorm without re-centering or bias; no kernel (the bench
    # rows of the NumPy reference against torch decide whether one is worth writing)
    Family("rms", None, "rms_norm_forward", "rms_norm_backward", modules=(
        Module("RMSNorm", ("normalized_shape",), ("eps", "elementwise_affine"), "trailing"),),
        param="trailing", bias=False,
        bench=(BenchCase("RMSNorm", (4, 512, 768), (2, 4, 8),
                         note="a quarter of LayerNorm's sequences: `normlab bench --quick` "
                              "stays within its time on a shared 2-core machine"),)),
)}


def modules() -> dict[str, tuple[Family, Module]]:
    """{nn class name: (its family, its declaration)} over every family."""
    return {m.name: (f, m) for f in FAMILIES.values() for m in f.modules}
