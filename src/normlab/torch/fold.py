"""Fold eval-mode BatchNorm into a neighbouring Linear / Conv / ConvTranspose of a torch model.

At inference BN is a fixed per-channel affine map (Ioffe & Szegedy 2015, Alg. 2, line 11), so
``conv -> bn`` is one convolution with scaled weights and a shifted bias; where no layer before
it can take it, it goes into the FOLLOWING Linear / unpadded conv (the rules, one set for every
folder: :mod:`normlab.fold.rules`). ``fold_bn`` returns a NEW module (the input is deep-copied,
never modified) and a :class:`~normlab.fold.FoldReport` listing every batch norm operation once:
folded (where into), or not folded (why), ending with ``folded X of Y``.

What counts as a batch norm (:mod:`normlab.torch._norms`):

* a plain BN layer (torch's and normlab's BatchNorm*d, SyncBatchNorm, ...) or a frozen one
  (normlab's / torchvision's FrozenBatchNorm2d): one fixed affine map, folded as a module;
* a BN SUBCLASS (timm's ``BatchNormAct2d``: normalisation, then drop-path and an activation in
  its own forward): torch.fx traces INTO its forward, so the ``batch_norm`` call is folded and
  what the subclass adds stays in the graph. One whose batch norm cannot fold is kept whole (a
  call of the module itself), so that it keeps its train/eval mode for ``train()``,
  ``recalibrate_bn`` and ``bn_health``. ``super().forward(x)`` inside such a forward is
  recorded as the ``F.batch_norm`` call torch's eval forward makes, and timm's frozen
  ``FrozenBatchNormAct2d`` as that call followed by its drop and act. A subclass whose forward
  cannot be traced is kept whole and reported: folding it could drop what it adds; so is any
  other module with BN statistics (its normalisation is not recognised);
* a ``batch_norm`` call on a weight (weight standardisation) is no batch norm: a note.

A module fx cannot trace because of some submodule is traced around that submodule; one it
cannot trace at all is left, with its BN children reported, and its other children folded.
Tracing leaves no state behind (a forward that caches a traced value would hand it to the next
trace); a graph that still reads another trace's value counts as untraceable.
A traced module in which nothing folded stays as it was. ``nn.Sequential`` is folded
structurally (Identity placeholders keep the state-dict keys) when its children are plain.
A Linear <-> BN fold is exact
only on (N, features) tensors (BatchNorm1d normalises dim 1, a Linear maps the last dim), which
only a shape can tell: unless the BN's class rules it out, the fold is made and the BN's place
is taken by :class:`FoldedLinearCheck`, which raises on any other rank instead of computing
something else (torch's ``fuse_linear_bn_eval`` assumes 2-D silently).
"""

from __future__ import annotations

import copy
from collections import Counter
from contextlib import contextmanager
from functools import reduce

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..fold.report import FoldReport, FoldResult, require_eval_mode
from ..fold.rules import NO_RUNNING_STATS, Layer, Norm, not_two_dim, why_not_merge
from ..fold.weights import fold_into_following, fold_into_preceding
from ..functional.batch import eval_scale_shift
from . import _norms
from .running import _RunningStatsMixin
from .sync import SyncBatchNorm


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


def _is_bn_like(m: nn.Module) -> bool:
    return isinstance(m, _BatchNorm) or _norms.has_bn_buffers(m)


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


_OWN_ARITHMETIC = "its forward ({}) normalises with its own arithmetic, not a batch_norm call " \
    "or a known batch norm layer, so it is not folded"


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


# -- tracing -----------------------------------------------------------------------------------
class _Tracer(fx.Tracer):
    """Plain and frozen BNs are leaves (call_module nodes); BN subclasses are traced INTO,
    except those whose forward fx cannot trace (``opaque``), which stay whole."""

    def __init__(self, opaque: frozenset[int] = frozenset()) -> None:
        super().__init__()
        self.opaque = opaque

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if _norms.is_plain_bn(m) or _norms.is_frozen_bn(m) or id(m) in self.opaque:
            return True
        if isinstance(m, _BatchNorm) or _norms.is_frozen_act(m):
            return False
        # any other module with BN statistics normalises in a way not recognised: kept whole
        # (traced, fx would bake its arithmetic into constants and drop its buffers)
        return _norms.has_bn_buffers(m) or super().is_leaf_module(m, qualname)


def _trace(module: nn.Module, kept: set[int] = frozenset()) -> tuple[fx.GraphModule, dict]:
    """``module`` as a GraphModule, and the parts of it kept whole: {path: (module, the
    error tracing it raised)}. A BN subclass whose forward fx cannot trace is kept whole, as are
    those in ``kept`` (ids); when the module still does not trace, so is each smallest
    submodule that does not (a conv with computed 'same' padding, say), and the rest is traced
    around them."""
    with _bn_forward_as_call(module):
        opaque = set(kept) | {id(m) for m in module.modules() if _norms.is_bn_subclass(m)
                              and id(m) not in kept and _trace_error(m, set()) is not None}
        try:
            return _graph_module(module, opaque), {}
        except Exception:  # find the parts that fail; the caller handles a second failure
            parts = _untraceable_parts(module, opaque, "")
            if not parts:
                raise
            opaque |= {id(m) for m, _ in parts.values()}
            return _graph_module(module, opaque), parts


def _graph_module(module: nn.Module, opaque: set[int]) -> fx.GraphModule:
    """One fresh trace of ``module``; raises (as any trace failure) if the graph reads a node
    of another graph, which a value cached during an earlier trace would be."""
    tracer = _Tracer(frozenset(opaque))
    with _no_side_effects(module):
        graph = tracer.trace(module)
    graph.lint()
    gm = fx.GraphModule(tracer.root, graph, type(module).__name__)
    for m in gm.modules():   # fx's bare holders start in training mode: the module's mode
        if type(m) is nn.Module:
            m.training = module.training
    return gm


def _trace_error(m: nn.Module, opaque: set[int]) -> Exception | None:
    """The error tracing ``m`` alone raises, or None."""
    try:
        with _no_side_effects(m):
            _Tracer(frozenset(opaque)).trace(m).lint()
    except Exception as err:  # any failure: fx cannot see what its forward does
        return err
    return None


_TORCH_STATE = frozenset({"_parameters", "_buffers", "_modules"})


@contextmanager
def _no_side_effects(module: nn.Module):
    """Each module's attributes, and the contents of its plain dict/list/set attributes, as
    they were before a trace. A forward that caches what it computes (timm's
    ``CascadedGroupAttention`` keeps its attention biases in a dict keyed by ``str(device)``)
    would otherwise keep a Proxy of this trace, hand it to the next trace, whose graph it does
    not belong to, and leave it in the model."""
    saved = []
    for m in module.modules():
        state = vars(m)
        contents = {k: copy.copy(v) for k, v in state.items()
                    if k not in _TORCH_STATE and type(v) in (dict, list, set)}
        saved.append((state, dict(state), contents))
    try:
        yield
    finally:
        for state, entries, contents in saved:
            state.clear()
            state.update(entries)
            for k, old in contents.items():
                entries[k].clear()
                (entries[k].extend if isinstance(old, list) else entries[k].update)(old)


def _untraceable_parts(module: nn.Module, opaque: set[int], prefix: str) -> dict:
    """{path: (submodule, error)} of the smallest submodules that fx cannot trace alone."""
    parts, leaf = {}, _Tracer(frozenset(opaque)).is_leaf_module
    for name, child in module.named_children():
        path = _join(prefix, name)
        err = None if leaf(child, path) else _trace_error(child, opaque)
        if err is not None:
            parts |= _untraceable_parts(child, opaque, path) or {path: (child, err)}
    return parts


def _eval_batch_norm(bn: _BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """The call torch's ``_BatchNorm.forward`` makes in eval mode (fold_bn requires eval)."""
    use_batch_stats = bn.running_mean is None and bn.running_var is None
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                        use_batch_stats, 0.0 if bn.momentum is None else bn.momentum, bn.eps)


@contextmanager
def _bn_forward_as_call(module: nn.Module):
    """While tracing, a BN subclass's ``super().forward(x)`` becomes one ``F.batch_norm``
    node (the plain forwards check the input's rank with Python ``if``, which fx cannot trace),
    and a frozen norm+act (timm's FrozenBatchNormAct2d, whose arithmetic fx would bake into
    constants) becomes that node followed by its own ``drop`` and ``act``. fx itself patches
    ``nn.Module.__call__`` the same way while it traces."""
    plain = (_BatchNorm, nn.SyncBatchNorm, _RunningStatsMixin, SyncBatchNorm)
    originals = {cls: cls.__dict__["forward"] for cls in plain}
    frozen_act = {type(m): type(m).forward for m in module.modules() if _norms.is_frozen_act(m)}

    def patched(original, frozen: bool):
        def forward(self, x, *args, **kwargs):
            if not isinstance(x, fx.Proxy) or args or kwargs or not (frozen or not self.training):
                return original(self, x, *args, **kwargs)
            if frozen:
                return self.act(self.drop(F.batch_norm(
                    x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0,
                    self.eps)))
            return _eval_batch_norm(self, x)
        return forward

    try:
        for cls, original in originals.items():
            cls.forward = patched(original, False)
        for cls, original in frozen_act.items():
            cls.forward = patched(original, True)
        yield
    finally:
        for cls, original in (originals | frozen_act).items():
            cls.forward = original


# -- one batch norm operation in a graph -------------------------------------------------------
# argument names and defaults of the batch_norm functions a forward may call
_BN_ARGS = {
    F.batch_norm: (("input", "running_mean", "running_var", "weight", "bias", "training",
                    "momentum", "eps"),
                   {"weight": None, "bias": None, "training": False, "momentum": 0.1,
                    "eps": 1e-5}),
    torch.batch_norm: (("input", "weight", "bias", "running_mean", "running_var", "training",
                        "momentum", "eps", "cudnn_enabled"), {}),
}


def _bn_args(func, args, kwargs) -> dict:
    """A batch_norm call's arguments by name, defaults filled in."""
    names, defaults = _BN_ARGS[func]
    return defaults | dict(zip(names, args, strict=False)) | dict(kwargs)


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


# -- counting what runs ------------------------------------------------------------------------
class _CountBatchNorm(torch.overrides.TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _BN_ARGS and _bn_args(func, args, kwargs)["running_mean"] is not None:
            self.count += 1
        return func(*args, **kwargs)


@torch.no_grad()
def count_bn_ops(model: nn.Module, *inputs) -> int:
    """How many batch norm operations one forward of ``model`` on ``inputs`` runs: calls of
    ``batch_norm`` with running statistics (BN layers, and BN code inside other layers'
    forwards) plus calls of frozen BN layers (any module with BatchNorm's running statistics
    that is no ``_BatchNorm``: FrozenBatchNorm2d, timm's FrozenBatchNormAct2d). After
    ``fold_bn`` it equals the number of operations the report lists as not folded."""
    frozen = [0]

    def hook(m, _inputs, _output):
        frozen[0] += 1

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if _norms.has_bn_buffers(m) and not isinstance(m, _BatchNorm)]
    counter = _CountBatchNorm()
    try:
        with counter:
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return counter.count + frozen[0]


def fold_bn_script(model) -> tuple[object, FoldReport]:
    """Fold BatchNorm in a TorchScript module, which torch.fx cannot trace.

    ``torch.jit.freeze`` inlines the weights as constants and runs TorchScript's own
    conv->BN and linear->BN folding passes on a copy; the report counts the ``aten::batch_norm``
    nodes before and after, so a BN that stayed (e.g. one after an activation) is listed, not
    hidden. The input module is not modified.
    """
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
