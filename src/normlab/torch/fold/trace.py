"""Tracing with torch.fx for :func:`~normlab.torch.fold.fold_bn`: which modules stay leaves,
and a batch norm module's eval forward recorded as the ``F.batch_norm`` call it makes."""

from __future__ import annotations

import copy
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm

from .. import _norms
from ..running import _RunningStatsMixin
from ..sync import SyncBatchNorm
from .common import _join


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
