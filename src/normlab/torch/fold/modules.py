"""``fold_bn``: a module tree folded module by module, ``nn.Sequential`` structurally and every
other module through its torch.fx graph (:mod:`.graph`); see :mod:`normlab.torch.fold`."""

from __future__ import annotations

import copy
from collections import Counter

from torch import fx, nn

from ...fold.report import FoldReport, FoldResult, require_eval_mode
from ...fold.rules import why_not_merge
from .. import _norms
from .common import (
    _OWN_ARITHMETIC,
    _Context,
    _fold_pair,
    _is_bn_like,
    _join,
    _layer,
    _placeholder,
    _why_not_fixed,
    torch_jit_types,
)
from .graph import _fold_graph
from .trace import _trace


def fold_bn(model: nn.Module) -> FoldResult:
    """Return (a folded deep copy of ``model``, a report of what was and was not folded).

    Refuses (``ValueError``) a model with any module in training mode: there BN normalises with
    batch statistics, which no fixed weights can reproduce.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, torch_jit_types()):
        raise TypeError("model: expected a Python torch.nn.Module, got a TorchScript module "
                        f"({type(model).__name__}); fold the eager model before scripting it")
    require_eval_mode(model, _norms.is_frozen_bn)
    folded = copy.deepcopy(model)
    ctx = _Context(FoldReport(), Counter(id(m) for _, m in
                                         folded.named_modules(remove_duplicate=False)))
    result = _fold_module(folded, "", ctx)
    _report_unseen(model, ctx)   # names are the same in the model and its copy
    return FoldResult(result, ctx.report)


# -- walking the model -------------------------------------------------------------------------
def _fold_module(module: nn.Module, prefix: str, ctx: _Context) -> nn.Module:
    """Fold inside ``module``; returns it (changed in place) or a GraphModule replacing it."""
    if not any(_is_bn_like(m) for m in module.modules()):
        return module   # nothing to fold: keep the module as it is
    if type(module).forward is nn.Sequential.forward and not any(
            _norms.is_bn_subclass(c) for c in module.children()):
        return _fold_sequential(module, prefix, ctx)
    if not any(True for _ in module.children()):
        return module
    try:
        gm, parts = _trace(module)
        if any(_norms.is_bn_subclass(m) for m in module.modules()):
            # the dry run spoils this graph: trace again, the unfolded subclasses kept whole
            ctx.kept |= _unfolded_subclasses(gm, module, prefix, ctx)
            gm, parts = _trace(module, set(ctx.kept))
    except Exception as err:  # any tracing failure means "fx cannot see the data flow"
        return _fold_children(module, prefix, ctx, _untraceable(prefix, err))
    done = len(ctx.report.folded)
    gm = _fold_graph(gm, module, prefix, ctx)
    for name, (part, err) in parts.items():   # kept whole in the graph: fold inside them
        _fold_children(part, _join(prefix, name), ctx, _untraceable(_join(prefix, name), err))
    # nothing folded here: the module stays as it was (its class, buffers and keys)
    return module if len(ctx.report.folded) == done else gm


def _unfolded_subclasses(gm: fx.GraphModule, root: nn.Module, prefix: str,
                         ctx: _Context) -> dict[int, str]:
    """{id: why} of the BN subclasses traced into whose batch norm would not fold (a dry run
    of the fold on this graph, weights untouched). They are then kept whole, as call_module
    nodes: traced into, their ``super().forward`` is a ``batch_norm`` call with
    ``training=False`` fixed in the graph, and the folded model would lose the module itself
    (``train()``, ``recalibrate_bn`` and ``bn_health`` would no longer see it)."""
    dry = _Context(FoldReport(), ctx.uses)
    ops = _fold_graph(gm, root, prefix, dry, dry_run=True)
    skipped = dict(dry.report.skipped)
    kept: dict[int, str] = {}
    for op in ops:
        if op.node.op != "call_function" or op.name not in skipped:
            continue
        m = _submodule(root, op.local)
        if m is not None and _norms.is_bn_subclass(m):
            kept.setdefault(id(m), f"{skipped[op.name]}; kept whole, so that it keeps its "
                                   "train/eval mode")
    return kept


def _submodule(root: nn.Module, path: str) -> nn.Module | None:
    try:
        return root.get_submodule(path)
    except AttributeError:   # a <node> name: no module made the call
        return None


def _untraceable(name: str, err: Exception) -> str:
    first = str(err).splitlines()[0] if str(err) else ""
    return f"the forward of {name or '<root>'} cannot be traced by torch.fx " \
           f"({type(err).__name__}: {first})"


def _fold_children(module: nn.Module, prefix: str, ctx: _Context, reason: str) -> nn.Module:
    """An untraceable module: its BN children stay (reported); other children are folded."""
    for name, child in list(module.named_children()):
        q = _join(prefix, name)
        if _is_bn_like(child):
            ctx.report.add_skipped(q, reason)
            continue
        new = _fold_module(child, q, ctx)
        if new is not child:
            _keep_plain_attributes(child, new)
            setattr(module, name, new)
    return module


def _keep_plain_attributes(old: nn.Module, new: nn.Module) -> None:
    """Give the GraphModule replacing ``old`` the plain attributes (numbers, flags, caches)
    it lacks: the untraced parent's forward may read them (timm's LocalWindowAttention reads
    ``self.attn.resolution``), and a GraphModule keeps only modules, parameters and buffers."""
    for key, value in vars(old).items():
        if not key.startswith("_") and not hasattr(new, key):
            object.__setattr__(new, key, value)   # plain, as it was: not registered


def _fold_sequential(seq: nn.Sequential, prefix: str, ctx: _Context) -> nn.Sequential:
    """Each plain or frozen BN child merges into the layer before it, else the one after it."""
    names = list(seq._modules)
    for i, name in enumerate(names):
        child = seq._modules[name]
        q = _join(prefix, name)
        if not (_norms.is_plain_bn(child) or _norms.is_frozen_bn(child)):
            new = _fold_module(child, q, ctx)
            if new is not child:
                seq._modules[name] = new
            continue
        why = _why_not_fixed(child)
        if why is None:
            why = _merge_neighbour(seq, names, i, prefix, ctx)
        if why is not None:
            ctx.report.add_skipped(q, why)
    return seq


def _merge_neighbour(seq: nn.Sequential, names: list[str], i: int, prefix: str,
                     ctx: _Context) -> str | None:
    """Fold BN child ``i`` into the child before it, else the one after it; None when done,
    else why neither is possible."""
    bn, q = seq._modules[names[i]], _join(prefix, names[i])
    norm = _norms.norm_of(bn)
    whys = []
    for j, following in ((i - 1, False), (i + 1, True)):
        if not 0 <= j < len(names):
            whys.append("last layer of its Sequential: no following layer" if following else
                        "first layer of its Sequential: no preceding layer")
            continue
        layer, layer_name = seq._modules[names[j]], _join(prefix, names[j])
        why = why_not_merge(_layer(layer, layer_name, ctx.uses), norm, following=following)
        if why is None:
            _fold_pair(layer, _norms.stats_of(bn), following=following)
            # Identity keeps the indices, so the other layers' state-dict keys do not move.
            seq._modules[names[i]] = _placeholder(layer, norm, q)
            ctx.report.add_folded(q, f"{layer_name} (the following layer)" if following
                                  else layer_name)
            return None
        whys.append(why)
    return "; ".join(whys)


def _report_unseen(model: nn.Module, ctx: _Context) -> None:
    """Every batch norm of the model is mentioned once: those no traced forward called."""
    seen = ctx.report.names()
    for name, m in model.named_modules():
        if name in seen or not _is_bn_like(m):
            continue
        if not name:
            ctx.report.add_skipped(name, "the model itself is a batch norm: no neighbouring "
                                         "layer to fold it into")
        elif name in ctx.called:
            ctx.report.add_skipped(name, _OWN_ARITHMETIC.format(type(m).__name__))
        else:
            ctx.report.add_note(name, "never called by the traced forward")
