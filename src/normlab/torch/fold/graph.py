"""Folding inside a torch.fx graph: each ``batch_norm`` call (module or function) and the
layer before or after it, per the rules of :mod:`normlab.fold.rules`."""

from __future__ import annotations

from collections import Counter
from functools import reduce

from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ...fold.rules import Norm, why_not_merge
from .. import _norms
from .common import (
    _OWN_ARITHMETIC,
    FoldedLinearCheck,
    _Context,
    _fold_pair,
    _is_bn_like,
    _join,
    _layer,
    _placeholder,
    _why_not_fixed,
)
from .trace import _BN_ARGS, _bn_args


class _Op:
    """A batch norm call in a graph: a BN module call or a ``batch_norm`` function call.
    ``local``: the module it belongs to, as a path inside the traced module."""

    def __init__(self, node: fx.Node, local: str, norm: Norm | None, stats: tuple | None,
                 why: str | None, attrs: tuple = ()) -> None:
        self.node, self.local, self.norm, self.stats, self.why = node, local, norm, stats, why
        self.attrs = attrs   # the get_attr nodes of a function call's statistics and affine
        self.input = node.args[0] if node.args else None

    @classmethod
    def of(cls, gm: fx.GraphModule, root: nn.Module, node: fx.Node, kept: dict[int, str]):
        """The op ``node`` is, or None. A ``batch_norm`` on weights alone (no graph input)
        comes back as a note: ``norm`` and ``why`` both None."""
        if node.op == "call_module":
            return cls._of_module(gm.get_submodule(node.target), node, kept)
        if node.op == "call_function" and node.target in _BN_ARGS:
            return cls._of_function(gm, root, node)
        return None

    @classmethod
    def _of_module(cls, m: nn.Module, node: fx.Node, kept: dict[int, str]):
        if _norms.is_plain_bn(m) or _norms.is_frozen_bn(m):
            why = "called with more than its input" if len(node.args) != 1 or node.kwargs \
                else _why_not_fixed(m)
            return cls(node, node.target, _norms.norm_of(m), _norms.stats_of(m), why)
        if id(m) in kept:
            return cls(node, node.target, None, None, kept[id(m)])
        if isinstance(m, _BatchNorm):   # a leaf only because fx cannot trace its forward
            return cls(node, node.target, None, None,
                       f"its forward ({type(m).__name__}) cannot be traced by torch.fx, so "
                       "what it adds to the normalisation is unknown: folding could drop it")
        if _is_bn_like(m):
            return cls(node, node.target, None, None, _OWN_ARITHMETIC.format(type(m).__name__))
        return None

    @classmethod
    def _of_function(cls, gm: fx.GraphModule, root: nn.Module, node: fx.Node):
        a = _bn_args(node.target, node.args, node.kwargs)
        attrs = tuple(a[k] for k in ("running_mean", "running_var", "weight", "bias")
                      if isinstance(a[k], fx.Node) and a[k].op == "get_attr")
        local = attrs[0].target.rpartition(".")[0] if attrs else _caller(node)
        if not _reads_input(a["input"]):
            return cls(node, local, None, None, None, attrs)
        why = _why_not_fixed_call(a)
        if why:
            return cls(node, local, None, None, why, attrs)
        stats = tuple(_attr(gm, a[k]) for k in ("running_mean", "running_var", "weight",
                                                "bias")) + (a["eps"],)
        module = root.get_submodule(local)
        norm = _norms.norm_of(module) if isinstance(module, _BatchNorm) else \
            Norm(type(module).__name__, int(stats[0].shape[0]))
        return cls(node, local, norm, stats, None, attrs)

    @property
    def is_note(self) -> bool:
        return self.norm is None and self.why is None


def _caller(node: fx.Node) -> str:
    """The module whose forward made the call (fx records the module stack), else <node>."""
    stack = node.meta.get("nn_module_stack")
    path = list(stack.values())[-1][0] if stack else ""
    return path or f"<{node.name}>"


def _why_not_fixed_call(a: dict) -> str | None:
    """None if a ``batch_norm`` call normalises with stored running statistics."""
    if a["running_mean"] is None or a["running_var"] is None:
        return "no running statistics (track_running_stats=False): it normalises with batch " \
               "statistics"
    if a["training"] is not False:
        return "called with training=True: it normalises with batch statistics"
    for k in ("running_mean", "running_var", "weight", "bias"):
        if a[k] is not None and not (isinstance(a[k], fx.Node) and a[k].op == "get_attr"):
            return f"its {k} is computed in the forward, not a stored tensor"
    return None


def _reads_input(node) -> bool:
    """Whether ``node``'s value depends on a graph input (else it is computed from weights
    alone: a batch_norm on it standardises a weight, as timm's ScaledStdConv2d does)."""
    stack, seen = [node], set()
    while stack:
        n = stack.pop()
        if not isinstance(n, fx.Node) or n in seen:
            continue
        if n.op == "placeholder":
            return True
        seen.add(n)
        stack.extend(n.all_input_nodes)
    return False


def _attr(gm: fx.GraphModule, node: fx.Node | None):
    """The tensor a ``get_attr`` node reads (None for a missing argument)."""
    return None if node is None else reduce(getattr, node.target.split("."), gm)


# -- folding a graph ---------------------------------------------------------------------------
_META = {"dim", "size", "ndim", "shape", "dtype", "device"}


def _value_users(node: fx.Node) -> list[fx.Node]:
    """Users that read ``node``'s values, not only its shape/dtype (folding changes values)."""
    def meta_only(u: fx.Node) -> bool:
        if u.op == "call_method" and u.target in _META:
            return True
        return u.op == "call_function" and u.target is getattr and u.args[1] in _META
    return [u for u in node.users if not meta_only(u)]


def _describe(node) -> str:
    if not isinstance(node, fx.Node):
        return repr(node)
    if node.op == "placeholder":
        return f"the input '{node.target}'"
    if node.op == "call_function":
        return f"{getattr(node.target, '__name__', node.target)}()"
    if node.op == "call_method":
        return f".{node.target}()"
    return str(node.target)


def _is_identity(node) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_module" and \
        type(node.graph.owning_module.get_submodule(node.target)) is nn.Identity


class _Graph:
    """Folding state of one traced module."""

    def __init__(self, gm: fx.GraphModule, prefix: str, ctx: _Context,
                 dry_run: bool = False) -> None:
        self.gm, self.prefix, self.ctx, self.dry_run = gm, prefix, ctx, dry_run
        self.calls = Counter(n.target for n in gm.graph.nodes if n.op == "call_module")

    def layer_at(self, node: fx.Node, op_node: fx.Node, *, following: bool):
        """(module, rules Layer) for the call_module ``node`` next to the BN ``op_node``."""
        name = _join(self.prefix, node.target)
        m = self.gm.get_submodule(node.target)
        elsewhere = None
        if self.calls[node.target] > 1:
            elsewhere = f"{name} is called more than once: folding would change its other calls"
        elif following and (len(node.args) != 1 or node.kwargs):
            elsewhere = f"the following {name} is called with more than its input"
        elif not following and len(_value_users(node)) > 1:
            others = ", ".join(_describe(u) for u in _value_users(node) if u is not op_node)
            elsewhere = f"the output of {name} is also used by {others}: folding would " \
                        "change what they see"
        return m, _layer(m, name, self.ctx.uses, elsewhere)

    def before(self, op: _Op):
        """(the layer node ``op`` reads, None) if it merges into it, else (None, why)."""
        src, via = op.input, op.node
        while _is_identity(src) and len(_value_users(src)) == 1:
            src, via = src.args[0], src
        if not isinstance(src, fx.Node) or src.op != "call_module":
            return None, f"its input comes from {_describe(src)}, not a Linear/Conv/ConvTranspose"
        m, layer = self.layer_at(src, via, following=False)
        why = why_not_merge(layer, op.norm, following=False)
        return (None, why) if why else (src, None)

    def after(self, op: _Op):
        """(the layer node that alone reads ``op``'s output, None) if exact, else (None, why)."""
        out = op.node
        users = _value_users(out)
        while len(users) == 1 and _is_identity(users[0]):
            out = users[0]
            users = _value_users(out)
        if len(users) != 1:
            used_by = ", ".join(_describe(u) for u in users) or "nothing"
            return None, f"its output is used by {used_by}, not by one following layer only"
        user = users[0]
        if user.op != "call_module":
            return None, f"its output feeds {_describe(user)}, not a Linear/Conv"
        m, layer = self.layer_at(user, out, following=True)
        why = why_not_merge(layer, op.norm, following=True)
        return (None, why) if why else (user, None)

    def fold(self, op: _Op, layer_node: fx.Node, *, following: bool) -> None:
        """Merge ``op`` into the layer, then take the op out of the graph."""
        layer = self.gm.get_submodule(layer_node.target)
        if not self.dry_run:
            _fold_pair(layer, op.stats, following=following)
        graph, replacement = self.gm.graph, op.input
        check = _placeholder(layer, op.norm, op.name)
        if isinstance(check, FoldedLinearCheck):
            target = op.local if op.node.op == "call_module" else \
                _join(op.local, "folded_check")
            with graph.inserting_before(op.node):
                self.gm.delete_submodule(target)
                self.gm.add_submodule(target, check)
                replacement = graph.call_module(target, (op.input,))
        op.node.replace_all_uses_with(replacement)
        graph.erase_node(op.node)
        for attr in op.attrs:
            if not attr.users:
                graph.erase_node(attr)
        into = _join(self.prefix, layer_node.target)
        self.ctx.report.add_folded(op.name, f"{into} (the following layer)" if following
                                   else into)


def _fold_graph(gm: fx.GraphModule, root: nn.Module, prefix: str, ctx: _Context, *,
                dry_run: bool = False):
    """Fold every op of ``gm`` that merges exactly and report each; returns ``gm``. A
    ``dry_run`` leaves the weights as they are (the graph is spoiled) and returns the ops."""
    g = _Graph(gm, prefix, ctx, dry_run)
    ctx.called |= _called(gm, prefix)
    ops = _ops(gm, root, prefix, ctx.kept)
    for op in ops:
        if op.is_note:
            ctx.report.add_note(op.name, "a batch_norm call on a weight, not on activations "
                                         "(weight standardisation): no batch norm layer, left "
                                         "as it is")
            continue
        if op.why:
            ctx.report.add_skipped(op.name, op.why)
            continue
        layer_node, why = g.before(op)
        if layer_node is not None:
            g.fold(op, layer_node, following=False)
            continue
        layer_node, next_why = g.after(op)
        if layer_node is None:
            ctx.report.add_skipped(op.name, f"{why}; {next_why}")
            continue
        g.fold(op, layer_node, following=True)
    if dry_run:
        return ops
    _drop_unread_state(gm)
    gm.graph.lint()
    gm.recompile()
    return gm


def _called(gm: fx.GraphModule, prefix: str) -> set[str]:
    """The traced module and every module whose forward ran while fx traced it (fx records
    the module stack of each node), as full names."""
    called = {prefix}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            called.add(_join(prefix, node.target))
        for path, _ in (node.meta.get("nn_module_stack") or {}).values():
            called.add(_join(prefix, path))
    return called


def _ops(gm: fx.GraphModule, root: nn.Module, prefix: str, kept: dict[int, str]) -> list[_Op]:
    """The graph's batch norm ops in order, each named by its module path in the whole model
    (the k-th call of one BN as 'name (call k)')."""
    ops, calls = [], Counter()
    for node in gm.graph.nodes:
        op = _Op.of(gm, root, node, kept)
        if op is None:
            continue
        calls[op.local] += 1
        k = calls[op.local]
        op.name = _join(prefix, op.local) + (f" (call {k})" if k > 1 else "")
        ops.append(op)
    return ops


def _drop_unread_state(gm: fx.GraphModule) -> None:
    """Remove the modules and tensors of folded BNs, which no node reads any more."""
    read = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for name, _ in list(gm.named_buffers()) + list(gm.named_parameters()):
        owner_path, _, attr = name.rpartition(".")
        owner = gm.get_submodule(owner_path)
        if name not in read and type(owner) is nn.Module:   # a bare holder fx made
            delattr(owner, attr)
    gm.delete_all_unused_submodules()
