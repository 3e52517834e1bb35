"""Fold eval-mode BatchNorm in a ``torch.export`` program, at the ATen level.

An exported program has no modules left, only ATen calls: in eval mode torch 2.13 emits
``aten.conv2d`` / ``aten.linear`` / ``aten.conv_transpose2d`` followed by
``aten.batch_norm(..., training=False, ...)`` (after ``run_decompositions``:
``aten.convolution`` and ``aten._native_batch_norm_legit_no_training`` + ``getitem(0)``). Each
BN is a fixed per-channel affine map (Ioffe & Szegedy 2015, Alg. 2, line 11), merged into the
layer before it, or where exact into the one after it (an unpadded conv or a Linear on
(N, features)), with the same float64 math as the eager folders (``normlab.fold.weights``).

The program is not modified: its ``module()`` (a fresh GraphModule) is rewritten, then exported
again with the given example inputs (static shapes), so the result is a normal ExportedProgram.
"""

from __future__ import annotations

from collections import Counter
from functools import reduce
from typing import TYPE_CHECKING, NamedTuple

from ...fold.report import FoldReport
from ...fold.rules import Layer, Norm, why_not_merge
from ...fold.weights import fold_into_following, fold_into_preceding
from ...functional.batch import eval_scale_shift
from .graph import _reads_input

if TYPE_CHECKING:  # pragma: no cover
    import torch


class ExportFoldResult(NamedTuple):
    """``program, report = fold_bn_export(ep, (x,))``."""

    program: torch.export.ExportedProgram
    report: FoldReport


def fold_bn_export(program, example_inputs: tuple) -> ExportFoldResult:
    """(a new ExportedProgram with BatchNorm folded, a report of what was and was not folded)."""
    import torch

    if not isinstance(program, torch.export.ExportedProgram):
        raise TypeError(f"program: expected a torch.export.ExportedProgram, got "
                        f"{type(program).__name__}")
    if not isinstance(example_inputs, tuple):
        raise TypeError(f"example_inputs: expected a tuple of inputs, got "
                        f"{type(example_inputs).__name__}")
    gm = program.module()
    report = fold_bn_graph(gm)
    return ExportFoldResult(torch.export.export(gm, example_inputs), report)


def fold_bn_graph(gm) -> FoldReport:
    """Fold BatchNorm calls in an unlifted export GraphModule (``program.module()``) in place."""
    report = FoldReport()
    uses = Counter(n.target for n in gm.graph.nodes if n.op == "get_attr")
    folded_owners = set()
    for node in list(gm.graph.nodes):
        bn = _BatchNormCall.of(gm, node)
        if bn is None:
            continue
        name = _name(node)
        if not _reads_input(bn.args["input"]):
            report.add_note(name, "a batch_norm call on a weight, not on activations (weight "
                                  "standardisation): no batch norm layer, left as it is")
            continue
        why = bn.why_not()
        if why:
            report.add_skipped(name, why)
            continue
        src = bn.args["input"]
        layer, why = _layer_before(gm, src, bn, uses)
        if layer is not None:
            layer.absorb(bn, following=False)
            bn.output.replace_all_uses_with(src)
            report.add_folded(name, _name(src))
        else:
            nxt, next_why = _layer_after(gm, bn, uses)
            if nxt is None:
                report.add_skipped(name, f"{why}; {next_why}")
                continue
            nxt.absorb(bn, following=True)
            bn.output.replace_all_uses_with(src)
            report.add_folded(name, f"{_name(nxt.node)} (the following layer)")
        folded_owners.add(bn.args["running_mean"].target.rpartition(".")[0])
        bn.erase()
    _drop_unused_state(gm, folded_owners)
    gm.graph.lint()
    gm.recompile()
    return report


# -- reading the graph -------------------------------------------------------------------------
def _name(node) -> str:
    """The eager module path the call came from (e.g. ``features.1``), else the node name."""
    stack = node.meta.get("nn_module_stack") if hasattr(node, "meta") else None
    if stack:
        path = list(stack.values())[-1][0]
        if path:
            return path
    return getattr(node, "name", repr(node))


def _normalized(node) -> dict:
    """Every schema argument of an ATen call by name, defaults filled in."""
    from torch.fx.operator_schemas import normalize_function

    pair = normalize_function(node.target, node.args, node.kwargs,
                              normalize_to_only_use_kwargs=True)
    return dict(pair.kwargs)


def _attr(gm, node):
    """The tensor a ``get_attr`` node reads, or None for a missing (None) argument."""
    if node is None:
        return None
    return reduce(getattr, node.target.split("."), gm)


def _np(t):
    return None if t is None else t.detach().cpu().double().numpy()


def _ndim(node) -> int | None:
    val = node.meta.get("val") if hasattr(node, "meta") else None
    return getattr(val, "ndim", None)


class _BatchNormCall:
    """One eval BatchNorm call: ``aten.batch_norm`` or ``_native_batch_norm_legit_no_training``
    (whose result is a tuple read by ``getitem(0)``: ``output`` is what the rest consumes)."""

    def __init__(self, gm, node, output, args: dict, training: bool):
        self.gm, self.node, self.output, self.args, self.training = gm, node, output, args, training

    @classmethod
    def of(cls, gm, node):
        import operator

        import torch

        aten = torch.ops.aten
        if node.op != "call_function":
            return None
        if node.target is aten.batch_norm.default:
            args = _normalized(node)
            return cls(gm, node, node, args, bool(args["training"]))
        if node.target is aten._native_batch_norm_legit_no_training.default:
            users = list(node.users)
            if len(users) == 1 and users[0].target is operator.getitem and users[0].args[1] == 0:
                return cls(gm, node, users[0], _normalized(node), False)
            return cls(gm, node, None, _normalized(node), False)
        return None

    def why_not(self) -> str | None:
        if self.args["running_mean"] is None or self.args["running_var"] is None:
            return "no running statistics (track_running_stats=False): it normalises with " \
                   "batch statistics"
        if self.training:
            return "exported in training mode: it normalises with batch statistics"
        if self.output is None:
            return "more of its results than the normalised output are used"
        if any(self.args[k] is not None and self.args[k].op != "get_attr"
               for k in ("weight", "bias", "running_mean", "running_var")):
            return "its parameters are computed in the graph, not stored weights"
        return None

    def scale_shift(self):
        a = self.args
        return eval_scale_shift(*(_np(_attr(self.gm, a[k]))
                                  for k in ("running_mean", "running_var", "weight", "bias")),
                                a["eps"])

    def norm(self, tensor) -> Norm:
        """The fold rules' view; the static shape of ``tensor`` (its input or output) tells
        whether it is (N, features) (no shape: it is not known to be, so no Linear fold)."""
        ndim = _ndim(tensor)
        return Norm("BatchNorm", int(_attr(self.gm, self.args["running_mean"]).shape[0]),
                    None if ndim is None else ndim - 2, ndim == 2)

    def erase(self) -> None:
        graph = self.gm.graph
        if self.output is not self.node:
            graph.erase_node(self.output)
        graph.erase_node(self.node)


class _LayerCall:
    """A Linear / convolution call whose weight and bias are stored tensors."""

    def __init__(self, gm, node, args: dict, kind: str):
        self.gm, self.node, self.args, self.kind = gm, node, args, kind

    @classmethod
    def of(cls, gm, node):
        import torch

        aten = torch.ops.aten
        if getattr(node, "op", None) != "call_function":
            return None
        kinds = {aten.linear.default: "linear", aten.convolution.default: "convolution"}
        for d in (1, 2, 3):
            for base, kind in ((f"conv{d}d", "conv"), (f"conv_transpose{d}d", "conv_transpose")):
                packet = getattr(aten, base)
                # overload names differ between ops and versions (default / padding / input)
                kinds.update({getattr(packet, o): kind for o in packet.overloads()})
        kind = kinds.get(node.target)
        if kind == "convolution":
            args = _normalized(node)
            return cls(gm, node, args, "conv_transpose" if args["transposed"] else "conv")
        return None if kind is None else cls(gm, node, _normalized(node), kind)

    @property
    def groups(self) -> int:
        return 1 if self.kind == "linear" else int(self.args["groups"])

    def zero_padded(self) -> bool:
        pad = self.args.get("padding", 0)
        if pad == "valid":
            return False
        if pad == "same":
            w = _attr(self.gm, self.args["weight"])
            dilation = self.args["dilation"]
            dilation = [dilation] * (w.ndim - 2) if isinstance(dilation, int) else dilation
            return any(d * (k - 1) for d, k in zip(dilation, w.shape[2:], strict=True))
        return any(pad) if isinstance(pad, (list, tuple)) else bool(pad)

    def facts(self, unusable: str | None) -> Layer:
        """This call as the fold rules see it (weights (out, in/g, *k); transposed (in, ...))."""
        w = self.args["weight"]   # stored or computed: its shape is in the node's meta
        shape = tuple(w.meta["val"].shape) if "val" in w.meta else _attr(self.gm, w).shape
        if self.kind == "linear":
            return Layer(_name(self.node), "Linear", "linear", shape[1], shape[0],
                         unusable=unusable)
        groups, spatial = self.groups, len(shape) - 2
        if self.kind == "conv_transpose":
            c_in, c_out = shape[0], shape[1] * groups
            type_name = f"ConvTranspose{spatial}d"
        else:
            c_in, c_out = shape[1] * groups, shape[0]
            type_name = f"Conv{spatial}d"
        return Layer(_name(self.node), type_name, self.kind, c_in, c_out, spatial,
                     self.zero_padded(), unusable)

    def why_not_stored(self, uses: Counter) -> str | None:
        for k in ("weight", "bias"):
            arg = self.args[k]
            if arg is not None and getattr(arg, "op", None) != "get_attr":
                return f"the {k} of {_name(self.node)} is computed in the graph"
            if arg is not None and (uses[arg.target] > 1 or len(arg.users) > 1):
                return f"the {k} of {_name(self.node)} is shared with other calls: folding " \
                       "would change them"
        return None

    def absorb(self, bn: _BatchNormCall, *, following: bool) -> None:
        """Rewrite this call's weight and bias to include ``bn`` (float64 math, cast back)."""
        import torch

        weight = _attr(self.gm, self.args["weight"])
        bias = _attr(self.gm, self.args["bias"])
        scale, shift = bn.scale_shift()
        if following:
            w, b = fold_into_following(_np(weight), _np(bias), scale, shift, groups=self.groups)
        else:
            w, b = fold_into_preceding(_np(weight), _np(bias), scale, shift,
                                       transposed=self.kind == "conv_transpose",
                                       groups=self.groups)
        # New Parameters replace the attributes of this GraphModule only: the program's own
        # tensors are never written.
        target = self.args["weight"].target
        owner_path, _, attr = target.rpartition(".")
        owner = self.gm.get_submodule(owner_path)
        like = dict(dtype=weight.dtype, device=weight.device)
        setattr(owner, attr, torch.nn.Parameter(torch.from_numpy(w).to(**like),
                                                requires_grad=False))
        new_bias = torch.nn.Parameter(torch.from_numpy(b).to(**like), requires_grad=False)
        if self.args["bias"] is not None:
            bias_path, _, bias_attr = self.args["bias"].target.rpartition(".")
            setattr(self.gm.get_submodule(bias_path), bias_attr, new_bias)
            return
        bias_attr = "bias"
        while hasattr(owner, bias_attr):
            bias_attr = f"{bias_attr}_folded"
        owner.register_parameter(bias_attr, new_bias)
        with self.gm.graph.inserting_before(self.node):
            bias_node = self.gm.graph.get_attr(f"{owner_path}.{bias_attr}".lstrip("."))
        self.args["bias"] = bias_node
        self.node.args, self.node.kwargs = (), dict(self.args)


def _layer_before(gm, src, bn: _BatchNormCall, uses: Counter):
    """(the layer call ``bn`` reads, None) if ``bn`` merges into it, else (None, why)."""
    layer = _LayerCall.of(gm, src)
    if layer is None:
        what = f"the input '{src.target}'" if getattr(src, "op", None) == "placeholder" else \
            f"{getattr(src.target, '__name__', src.target)}()" if hasattr(src, "target") else src
        return None, f"its input comes from {what}, not a Linear/Conv/ConvTranspose"
    unusable = layer.why_not_stored(uses)
    if len(src.users) > 1:
        others = ", ".join(_name(u) for u in src.users if u is not bn.node)
        unusable = f"the output of {_name(src)} is also used by {others}: folding would " \
                   "change what they see"
    why = why_not_merge(layer.facts(unusable), bn.norm(src), following=False)
    return (None, why) if why else (layer, None)


def _layer_after(gm, bn: _BatchNormCall, uses: Counter):
    """(the layer call that alone reads ``bn``'s output, None) if exact, else (None, why)."""
    users = list(bn.output.users)
    if len(users) != 1:
        used_by = ", ".join(_name(u) for u in users) or "nothing"
        return None, f"its output is used by {used_by}, not by one following layer only"
    layer = _LayerCall.of(gm, users[0])
    if layer is None:
        return None, f"its output feeds {_name(users[0])}, not a Linear/Conv"
    unusable = layer.why_not_stored(uses)
    if layer.args["input"] is not bn.output:
        unusable = f"its output is not the input of {_name(layer.node)}"
    why = why_not_merge(layer.facts(unusable), bn.norm(bn.output), following=True)
    return (None, why) if why else (layer, None)


def _drop_unused_state(gm, owners: set[str]) -> None:
    """Remove the folded BNs' parameters and buffers (of ``owners``, now read by nothing)."""
    for node in list(gm.graph.nodes):
        if node.op != "get_attr" or node.users:
            continue
        owner_path, _, attr = node.target.rpartition(".")
        if owner_path not in owners:
            continue
        gm.graph.erase_node(node)
        still_read = any(n.op == "get_attr" and n.target == node.target for n in gm.graph.nodes)
        if not still_read:
            delattr(gm.get_submodule(owner_path), attr)
