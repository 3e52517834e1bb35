"""When an eval-mode BatchNorm merges EXACTLY into a neighbouring layer: the one set of rules.

The NumPy engine (``normlab.fold.engine``), the eager torch folder (``normlab.torch.fold``) and
the ``torch.export`` folder (``normlab.torch.fold_export``) each describe the two layers in their
own representation as a :class:`Layer` and a :class:`Norm`, and ask :func:`why_not_merge`.

At inference BN is ``y = x * scale + shift`` per channel of dim 1 (Ioffe & Szegedy 2015, Alg. 2,
line 11). Merging it

* into the layer BEFORE it (W' = W * scale, b' = b * scale + shift) needs that layer's output
  channels to be the BN's channels: true for a Conv/ConvTranspose (channels in dim 1) and for a
  Linear only on (N, features) output, where dim 1 is its features (torch's
  ``fuse_linear_bn_eval`` makes the same assumption);
* into the layer AFTER it (W' = W * scale over input channels, b' = b + W shift) needs every
  weight entry to read a BN output: true for a Linear on (N, features) and an unpadded conv;
  replicate/reflect/circular padding copies BN outputs, so it is exact too; zero padding feeds
  zeros, not BN's zero point ``shift``; a ConvTranspose sums fewer inputs into its borders.

Either way the layer must be used only here (a shared layer's other uses would change) and use
the weights written into it (not recompute them in a parametrization or hook).
"""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("linear", "conv", "conv_transpose")
# why a BN without running statistics is no fixed affine map, so neither merges nor becomes one
NO_RUNNING_STATS = ("track_running_stats=False: it normalises with batch statistics even in "
                    "eval mode")


@dataclass(frozen=True)
class Layer:
    """A neighbouring layer as the rules see it; ``kind`` is one of :data:`KINDS` or None."""

    name: str
    type_name: str
    kind: str | None
    in_channels: int = 0
    out_channels: int = 0
    spatial_dims: int | None = None   # a conv's kernel dims
    zero_pads: bool = False           # a conv that pads its input with zeros
    unusable: str | None = None       # why it cannot take new weights (shared, called twice,
                                      # its output used elsewhere too, lazy, parametrized)


@dataclass(frozen=True)
class Norm:
    """The BatchNorm: its type, channels, spatial dims (None: unknown) and whether its tensor
    can be (N, features) -- False for BatchNorm2d/3d, None when only a runtime check can tell."""

    type_name: str
    channels: int
    spatial_dims: int | None = None
    two_dim: bool | None = None


def not_two_dim(bn_name: str, shape: tuple[int, ...]) -> str:
    """Why a model whose BatchNorm ``bn_name`` was folded into a Linear refuses an input of
    ``shape``: the fold is exact only on (N, features) tensors, where BatchNorm1d's channels
    (dim 1) are the Linear's features (its last dim)."""
    return (f"input: expected a 2-D (N, features) tensor where BatchNorm '{bn_name}' was folded "
            f"into a Linear (the fold is exact only there: BatchNorm1d normalises dim 1, a "
            f"Linear maps the last dim), got shape {tuple(shape)}; fold_bn a model that sees "
            f"2-D tensors here")


def why_not_merge(layer: Layer, norm: Norm, *, following: bool) -> str | None:
    """None if ``norm`` merges exactly into ``layer`` (the layer after it when ``following``,
    else the one before it), else the reason it does not."""
    if layer.kind not in KINDS or (following and layer.kind == "conv_transpose"):
        return _wrong_kind(layer, following)
    if layer.kind == "linear" and norm.two_dim is False:
        where = f"before Linear {layer.name}: only BatchNorm1d on its (N, features) input" \
            if following else \
            f"after Linear {layer.name}: only BatchNorm1d on its (N, features) output"
        return f"{norm.type_name} {where} can be folded"
    if layer.unusable:
        return layer.unusable
    if following and layer.kind == "conv":
        if norm.spatial_dims is not None and layer.spatial_dims != norm.spatial_dims:
            return f"{norm.type_name} before {layer.type_name} {layer.name}: spatial " \
                   "dimensions differ"
        if layer.zero_pads:
            return f"the following conv {layer.name} pads with zeros, which are not BN's " \
                   "zero point (its output for a zero border would be the BN shift)"
    channels = layer.in_channels if following else layer.out_channels
    if channels != norm.channels:
        side = "input" if following else "output"
        return f"{layer.name} has {channels} {side} channels but the BatchNorm has " \
               f"{norm.channels}"
    return None


def _wrong_kind(layer: Layer, following: bool) -> str:
    if not following:
        return f"its input comes from {layer.name} ({layer.type_name}), not a " \
               "Linear/Conv/ConvTranspose"
    if layer.kind == "conv_transpose":
        return f"the following {layer.type_name} {layer.name} sums fewer input positions " \
               "into its border outputs, so BN's shift is no per-channel bias there"
    return f"its output feeds {layer.name} ({layer.type_name}), not a Linear/Conv"
