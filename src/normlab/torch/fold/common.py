"""What the torch folders share: the fold context, the weight math on a layer and its BN, and
the fold rules' view of a layer (:mod:`normlab.fold.rules`); see :mod:`normlab.torch.fold`."""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ...fold.report import FoldReport
from ...fold.rules import NO_RUNNING_STATS, Layer, Norm, not_two_dim
from ...fold.weights import fold_into_following, fold_into_preceding
from ...functional.batch import eval_scale_shift
from .. import _norms


def torch_jit_types() -> tuple[type, ...]:
    return (torch.jit.ScriptModule,)


class _Context:
    """What one ``fold_bn`` call carries around: the report, how often each module object is
    registered (a shared layer cannot absorb a BN), and which modules the traced forwards ran."""

    def __init__(self, report: FoldReport, uses: Counter) -> None:
        self.report, self.uses = report, uses
        self.called: set[str] = set()   # every module a traced forward ran (full names)
        # BN subclasses kept whole (id -> why their batch norm does not fold)
        self.kept: dict[int, str] = {}


# -- the weight math ---------------------------------------------------------------------------
def _np(t) -> np.ndarray | None:
    return None if t is None else t.detach().cpu().double().numpy()


def _fold_pair(layer: nn.Module, stats: tuple, *, following: bool) -> None:
    """Merge the BN with ``stats`` = (running_mean, running_var, weight, bias, eps) into
    ``layer`` in place (float64 math, cast back to the layer's dtype). ``following``: the BN
    feeds ``layer`` (its input channels) instead of reading its output."""
    rm, rv, weight, bias, eps = stats
    scale, shift = eval_scale_shift(_np(rm), _np(rv), _np(weight), _np(bias), eps)
    groups = getattr(layer, "groups", 1)
    if following:
        w, b = fold_into_following(_np(layer.weight), _np(layer.bias), scale, shift,
                                   groups=groups)
    else:
        transposed = isinstance(layer, nn.modules.conv._ConvTransposeNd)
        w, b = fold_into_preceding(_np(layer.weight), _np(layer.bias), scale, shift,
                                   transposed=transposed, groups=groups)
    like = layer.weight
    with torch.no_grad():
        like.copy_(torch.from_numpy(w))
        new_bias = torch.from_numpy(b).to(dtype=like.dtype, device=like.device)
        if layer.bias is None:
            layer.bias = nn.Parameter(new_bias, requires_grad=like.requires_grad)
        else:
            layer.bias.copy_(new_bias)


# -- the Linear guard --------------------------------------------------------------------------
def _check_two_dim(x: torch.Tensor, bn_name: str) -> torch.Tensor:
    if x.dim() != 2:
        raise ValueError(not_two_dim(bn_name, tuple(x.shape)))
    return x


fx.wrap("_check_two_dim")  # a re-traced folded model keeps the check as one call


class FoldedLinearCheck(nn.Module):
    """Takes the place of a BatchNorm folded into a neighbouring Linear: passes 2-D tensors
    through and raises ``ValueError`` on any other rank, where the fold would be wrong."""

    def __init__(self, bn_name: str) -> None:
        super().__init__()
        self.bn_name = bn_name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _check_two_dim(x, self.bn_name)

    def extra_repr(self) -> str:
        return repr(self.bn_name)


def _placeholder(layer: nn.Module, norm: Norm, bn_name: str) -> nn.Module:
    """What takes a folded BN's place: Identity, or the rank check next to a Linear whose
    2-D-ness the BN's class does not already guarantee."""
    if isinstance(layer, nn.Linear) and norm.two_dim is None:
        return FoldedLinearCheck(bn_name)
    return nn.Identity()


# -- the rules' view of torch layers -----------------------------------------------------------
_LAYER_KINDS = {nn.Linear: "linear", nn.Conv1d: "conv", nn.Conv2d: "conv", nn.Conv3d: "conv",
                nn.ConvTranspose1d: "conv_transpose", nn.ConvTranspose2d: "conv_transpose",
                nn.ConvTranspose3d: "conv_transpose"}


def _kind(m: nn.Module) -> str | None:
    """The layer kind, for a module that computes exactly its base class's linear map: a
    subclass with its own forward (weight standardisation, 'same' padding, ...) is not one."""
    for cls, kind in _LAYER_KINDS.items():
        if isinstance(m, cls) and type(m).forward is cls.forward and \
                getattr(type(m), "_conv_forward", None) is getattr(cls, "_conv_forward", None):
            return kind
    return None


def _layer(m: nn.Module, name: str, uses: Counter, elsewhere: str | None = None) -> Layer:
    """``m`` as the fold rules see it; ``elsewhere``: a graph-level reason it is not alone."""
    kind = _kind(m)
    if kind is None:
        return Layer(name, type(m).__name__, None)
    linear = kind == "linear"
    zero_pads = not linear and any(m._reversed_padding_repeated_twice) and \
        m.padding_mode == "zeros"
    return Layer(name, type(m).__name__, kind,
                 m.in_features if linear else m.in_channels,
                 m.out_features if linear else m.out_channels,
                 None if linear else len(m.kernel_size), zero_pads,
                 _why_not_writable(m, name, uses) or elsewhere)


def _why_not_writable(m: nn.Module, name: str, uses: Counter) -> str | None:
    """None if writing folded weights into ``m`` changes exactly this use of it."""
    from torch.nn.modules.lazy import LazyModuleMixin
    from torch.nn.utils import parametrize

    if isinstance(m, LazyModuleMixin) and m.has_uninitialized_params():
        return f"lazy layer {name} is not initialised yet"
    if uses[id(m)] > 1:
        return f"{name} is shared (registered more than once): folding would change its " \
               "other uses"
    if parametrize.is_parametrized(m) or m._forward_pre_hooks or m._forward_hooks:
        return f"{name} computes its weight in a parametrization or hook (weight_norm, ...): " \
               "folded weights written into it would not be the ones it uses"
    return None


def _why_not_fixed(m: nn.Module) -> str | None:
    """None if the plain or frozen BN module ``m`` is one fixed affine map now, else why not."""
    from torch.nn.modules.lazy import LazyModuleMixin

    if isinstance(m, LazyModuleMixin) and m.has_uninitialized_params():
        return "lazy BatchNorm is not initialised yet"
    if getattr(m, "running_mean", None) is None or getattr(m, "running_var", None) is None:
        return NO_RUNNING_STATS
    if m._forward_hooks or m._forward_pre_hooks:
        return "it has forward hooks, which a folded model would no longer call"
    return None


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _is_bn_like(m: nn.Module) -> bool:
    return isinstance(m, _BatchNorm) or _norms.has_bn_buffers(m)


_OWN_ARITHMETIC = "its forward ({}) normalises with its own arithmetic, not a batch_norm call " \
    "or a known batch norm layer, so it is not folded"
