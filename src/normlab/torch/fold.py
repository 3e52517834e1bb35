"""Fold eval-mode BatchNorm into a neighbouring Linear / Conv / ConvTranspose of a torch model.

At inference BN is a fixed per-channel affine map (Ioffe & Szegedy 2015, Alg. 2, line 11), so
``conv -> bn`` is one convolution with scaled weights and a shifted bias. A BN with no foldable
layer before it goes into the FOLLOWING Linear / Conv1d/2d/3d where that is exact: its output
must feed only that layer, and the conv must not zero-pad (a zero border is not BN's zero
point, ``shift``; replicate/reflect/circular padding copies BN outputs, so it is exact).
``fold_bn`` works on ``nn.Sequential`` structurally and on any other module through
``torch.fx`` tracing, returns a NEW module (the input is deep-copied, never modified) and a
:class:`~normlab.fold.FoldReport` naming every BatchNorm it folded and every one it could
not, with the reason.

Channels-first layouts only (torch's own). A ``Linear -> BatchNorm1d`` pair is folded on the
assumption torch's ``fuse_linear_bn_eval`` also makes: the Linear's output is (N, features), the
only layout in which BN1d's channels are the Linear's output features.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from ..fold.report import FoldReport, require_eval_mode
from ..fold.weights import fold_into_following, fold_into_preceding
from ..functional.batch import eval_scale_shift

if TYPE_CHECKING:  # pragma: no cover
    import torch


class FoldResult(NamedTuple):
    """``model, report = fold_bn(m)``."""

    model: torch.nn.Module
    report: FoldReport


def fold_bn(model: torch.nn.Module) -> FoldResult:
    """Return (a folded deep copy of ``model``, a report of what was and was not folded).

    Refuses (``ValueError``) a model with any module in training mode: there BN normalises with
    batch statistics, which no fixed weights can reproduce.
    """
    from torch import nn

    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, torch_jit_types()):
        raise TypeError("model: expected a Python torch.nn.Module, got a TorchScript module "
                        f"({type(model).__name__}); fold the eager model before scripting it")
    require_eval_mode(model)
    folded = copy.deepcopy(model)
    report = FoldReport()
    uses = Counter(id(m) for _, m in folded.named_modules(remove_duplicate=False))
    result = _fold_module(folded, "", report, uses)
    seen = {name for name, _ in report.folded} | {name for name, _ in report.skipped}
    for name, m in model.named_modules():
        if _is_bn(m) and name not in seen:
            report.add_skipped(name, "not fed by a Linear/Conv/ConvTranspose in a traceable "
                                     "forward (never called, or the model itself)")
    return FoldResult(result, report)


def torch_jit_types() -> tuple[type, ...]:
    import torch

    return (torch.jit.ScriptModule,)


# -- the weight math ---------------------------------------------------------------------------
def _np(t) -> np.ndarray | None:
    return None if t is None else t.detach().cpu().double().numpy()


def _fold_pair(layer, bn, *, following: bool = False) -> None:
    """Merge ``bn`` into ``layer`` in place (float64 math, cast back to the layer's dtype).

    ``following``: ``bn`` feeds ``layer`` (its input channels) instead of reading its output.
    """
    import torch
    from torch import nn

    scale, shift = eval_scale_shift(_np(bn.running_mean), _np(bn.running_var), _np(bn.weight),
                                    _np(bn.bias), bn.eps)
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


# -- which pairs may be folded -----------------------------------------------------------------
def _is_bn(m) -> bool:
    from torch.nn.modules.batchnorm import _BatchNorm

    return isinstance(m, _BatchNorm)


def _why_not(layer, layer_name: str, bn, uses: Counter) -> str | None:
    """None if ``layer -> bn`` can be folded exactly, else the reason it cannot."""
    from torch import nn
    from torch.nn.modules.lazy import LazyModuleMixin

    why = _why_not_bn(bn)
    if why:
        return why
    if isinstance(layer, nn.Linear):
        if not isinstance(bn, nn.BatchNorm1d):
            return f"{type(bn).__name__} after Linear {layer_name}: only BatchNorm1d on its " \
                   "(N, features) output can be folded"
        out = layer.out_features
    elif isinstance(layer, nn.modules.conv._ConvNd):
        out = layer.out_channels
    else:
        return f"its input comes from {layer_name} ({type(layer).__name__}), not a " \
               "Linear/Conv/ConvTranspose"
    if isinstance(layer, LazyModuleMixin) and layer.has_uninitialized_params():
        return f"lazy layer {layer_name} is not initialised yet"
    if out != bn.num_features:
        return f"{layer_name} has {out} output channels but the BatchNorm has {bn.num_features}"
    if uses[id(layer)] > 1:
        return f"{layer_name} is shared (registered more than once): folding would change " \
               "its other uses"
    return None


def _why_not_bn(bn) -> str | None:
    """None if ``bn`` is a fixed affine map in eval mode, else why it is not."""
    from torch.nn.modules.lazy import LazyModuleMixin

    if not bn.track_running_stats or bn.running_mean is None:
        return "track_running_stats=False: it normalises with batch statistics even in eval mode"
    if isinstance(bn, LazyModuleMixin) and bn.has_uninitialized_params():
        return "lazy BatchNorm is not initialised yet"
    return None


def _bn_dims(bn) -> int | None:
    from torch import nn

    for cls, dims in ((nn.BatchNorm1d, 1), (nn.BatchNorm2d, 2), (nn.BatchNorm3d, 3)):
        if isinstance(bn, cls):
            return dims
    return None


def _why_not_following(layer, layer_name: str, bn, uses: Counter) -> str | None:
    """None if ``bn -> layer`` folds exactly into ``layer`` (the BN's only consumer), else why.

    y = W (x * scale + shift) + b is one layer only where every weight entry reads a BN output:
    true for a Linear and an unpadded conv, and for replicate/reflect/circular padding (which
    copy BN outputs, so pad(x * scale + shift) = pad(x) * scale + shift per channel).
    """
    from torch import nn
    from torch.nn.modules.lazy import LazyModuleMixin

    why = _why_not_bn(bn)
    if why:
        return why
    if isinstance(layer, nn.Linear):
        if not isinstance(bn, nn.BatchNorm1d):
            return f"{type(bn).__name__} before Linear {layer_name}: only BatchNorm1d on its " \
                   "(N, features) input can be folded"
        channels = layer.in_features
    elif isinstance(layer, nn.modules.conv._ConvTransposeNd):
        return f"the following {type(layer).__name__} {layer_name} sums fewer input positions " \
               "into its border outputs, so BN's shift is no per-channel bias there"
    elif isinstance(layer, nn.modules.conv._ConvNd):
        if len(layer.kernel_size) != _bn_dims(bn):
            return f"{type(bn).__name__} before {type(layer).__name__} {layer_name}: " \
                   "spatial dimensions differ"
        if any(layer._reversed_padding_repeated_twice) and layer.padding_mode == "zeros":
            return f"the following conv {layer_name} pads with zeros, which are not BN's " \
                   "zero point (its output for a zero border would be the BN shift)"
        channels = layer.in_channels
    else:
        return f"its output feeds {layer_name} ({type(layer).__name__}), not a Linear/Conv"
    if isinstance(layer, LazyModuleMixin) and layer.has_uninitialized_params():
        return f"lazy layer {layer_name} is not initialised yet"
    if channels != bn.num_features:
        return f"{layer_name} has {channels} input channels but the BatchNorm has " \
               f"{bn.num_features}"
    if uses[id(layer)] > 1:
        return f"{layer_name} is shared (registered more than once): folding would change " \
               "its other uses"
    return None


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


# -- walking the model -------------------------------------------------------------------------
def _fold_module(module, prefix: str, report: FoldReport, uses: Counter):
    """Fold inside ``module``; returns it (changed in place) or a GraphModule replacing it."""
    import torch
    from torch import nn

    if isinstance(module, nn.Sequential):
        return _fold_sequential(module, prefix, report, uses)
    if not any(True for _ in module.children()):
        return module
    try:
        gm = torch.fx.symbolic_trace(module)
    except Exception as err:  # any tracing failure means "fx cannot see the data flow"
        reason = f"the forward of {prefix or '<root>'} cannot be traced by torch.fx " \
                 f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        for name, child in list(module.named_children()):
            q = _join(prefix, name)
            if _is_bn(child):
                report.add_skipped(q, reason)
                continue
            new = _fold_module(child, q, report, uses)
            if new is not child:
                setattr(module, name, new)
        return module
    return _fold_graph(gm, prefix, report, uses)


def _fold_sequential(seq, prefix: str, report: FoldReport, uses: Counter):
    from torch import nn

    names = list(seq._modules)
    for i, name in enumerate(names):
        child = seq._modules[name]
        q = _join(prefix, name)
        if not _is_bn(child):
            new = _fold_module(child, q, report, uses)
            if new is not child:
                seq._modules[name] = new
            continue
        prev_name = _join(prefix, names[i - 1]) if i else ""
        why = "first layer of its Sequential: no preceding layer" if i == 0 else \
            _why_not(seq._modules[names[i - 1]], prev_name, child, uses)
        if why is None:
            _fold_pair(seq._modules[names[i - 1]], child)
            # Identity keeps the indices, so the other layers' state-dict keys do not move.
            seq._modules[name] = nn.Identity()
            report.add_folded(q, prev_name)
            continue
        if i + 1 == len(names):
            report.add_skipped(q, f"{why}; last layer of its Sequential: no following layer")
            continue
        next_name = _join(prefix, names[i + 1])
        next_why = _why_not_following(seq._modules[names[i + 1]], next_name, child, uses)
        if next_why:
            report.add_skipped(q, f"{why}; {next_why}")
            continue
        _fold_pair(seq._modules[names[i + 1]], child, following=True)
        seq._modules[name] = nn.Identity()
        report.add_folded(q, f"{next_name} (the following layer)")
    return seq


def _describe(node) -> str:
    if not hasattr(node, "op"):
        return repr(node)
    if node.op == "placeholder":
        return f"the input '{node.target}'"
    if node.op == "call_function":
        return f"{getattr(node.target, '__name__', node.target)}()"
    if node.op == "call_method":
        return f".{node.target}()"
    return str(node.target)


def _following_in_graph(gm, node, prefix: str, bn, calls: Counter, uses: Counter):
    """(the layer node ``bn``'s output feeds, None) if it may absorb ``bn``, else (None, why)."""
    users = list(node.users)
    if len(users) != 1:
        used_by = ", ".join(_describe(u) for u in users) or "nothing"
        return None, f"its output is used by {used_by}, not by one following layer only"
    user = users[0]
    if user.op != "call_module":
        return None, f"its output feeds {_describe(user)}, not a Linear/Conv"
    name = _join(prefix, user.target)
    if len(user.args) != 1 or user.kwargs:
        return None, f"the following {name} is called with more than its input"
    if calls[user.target] > 1:
        return None, f"the following {name} is called more than once: folding would change " \
                     "its other calls"
    why = _why_not_following(gm.get_submodule(user.target), name, bn, uses)
    return (None, why) if why else (user, None)


def _fold_graph(gm, prefix: str, report: FoldReport, uses: Counter):
    import torch.nn.functional as F

    graph = gm.graph
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    folded_targets = set()
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target is F.batch_norm:
            report.add_skipped(_join(prefix, f"<{node.name}>"), "functional batch_norm call, "
                               "not a module: only BatchNorm modules are folded")
        if node.op != "call_module" or not _is_bn(gm.get_submodule(node.target)):
            continue
        bn = gm.get_submodule(node.target)
        q = _join(prefix, node.target)
        src = node.args[0] if node.args else None
        if len(node.args) != 1 or node.kwargs:
            why = "called with more than one argument"
        elif getattr(src, "op", None) != "call_module":
            why = f"its input comes from {_describe(src)}, not a Linear/Conv/ConvTranspose"
        else:
            layer_name = _join(prefix, src.target)
            why = _why_not(gm.get_submodule(src.target), layer_name, bn, uses)
            if why is None and calls[src.target] > 1:
                why = f"{layer_name} is called more than once: folding would change its " \
                      "other calls"
            if why is None and len(src.users) > 1:
                others = ", ".join(_describe(u) for u in src.users if u is not node)
                why = f"the output of {layer_name} is also used by {others}: folding would " \
                      "change what they see"
        if why and len(node.args) == 1 and not node.kwargs:
            user, next_why = _following_in_graph(gm, node, prefix, bn, calls, uses)
            if next_why:
                report.add_skipped(q, f"{why}; {next_why}")
                continue
            _fold_pair(gm.get_submodule(user.target), bn, following=True)
            node.replace_all_uses_with(src)
            graph.erase_node(node)
            folded_targets.add(node.target)
            report.add_folded(q, f"{_join(prefix, user.target)} (the following layer)")
            continue
        if why:
            report.add_skipped(q, why)
            continue
        _fold_pair(gm.get_submodule(src.target), bn)
        node.replace_all_uses_with(src)
        graph.erase_node(node)
        folded_targets.add(node.target)
        report.add_folded(q, _join(prefix, src.target))
    remaining = {n.target for n in graph.nodes if n.op == "call_module"}
    for target in folded_targets - remaining:
        gm.delete_submodule(target)
    graph.lint()
    gm.recompile()
    return gm


def fold_bn_script(model) -> tuple[object, FoldReport]:
    """Fold BatchNorm in a TorchScript module, which torch.fx cannot trace.

    ``torch.jit.freeze`` inlines the weights as constants and runs TorchScript's own
    conv->BN and linear->BN folding passes on a copy; the report counts the ``aten::batch_norm``
    nodes before and after, so a BN that stayed (e.g. one after an activation) is listed, not
    hidden. The input module is not modified.
    """
    import torch

    if not isinstance(model, torch_jit_types()):
        raise TypeError(f"model: expected a TorchScript module, got {type(model).__name__}")
    require_eval_mode(model)

    def count(graph) -> int:
        return sum(1 for node in graph.nodes() if node.kind() == "aten::batch_norm")

    before = count(model.inlined_graph)
    frozen = torch.jit.freeze(model)
    after = count(frozen.graph)
    report = FoldReport()
    for i in range(before - after):
        report.add_folded(f"batch_norm #{i + 1}", "its preceding conv/linear (torch.jit.freeze)")
    for i in range(after):
        report.add_skipped(f"batch_norm #{before - after + i + 1}",
                           "TorchScript's freeze folds a BN only directly after a conv/linear")
    return frozen, report
