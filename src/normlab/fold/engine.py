"""Fold the BatchNorms of a NumPy-engine model (``normlab.nn``) away for inference.

* ``Linear/Conv2d -> BatchNorm``: merged into the layer's weights and bias (bias created if
  absent): W' = W * scale, b' = b * scale + shift.
* ``BatchNorm -> Linear/Conv2d`` with nothing to merge into before it: merged into the
  FOLLOWING layer (W' = W * scale over input channels, b' = b + W shift) when that is exact, i.e.
  the conv has no padding (zero padding feeds literal zeros, not ``shift``, at the borders).
* any other BatchNorm becomes one :class:`Affine` (per-channel multiply-add).

Linear <-> BatchNorm1d pairs assume (N, features) activations, the only layout in which BN1d's
channels are the Linear's features (torch's ``fuse_linear_bn_eval`` assumes the same); a
:class:`FoldedLinearCheck` stays in the BatchNorm's place and refuses any other rank.
"""

from __future__ import annotations

import copy
from collections import Counter

import numpy as np

from ..functional.batch import eval_scale_shift
from ..nn import BatchNorm1d, Conv2d, Linear, Module, Parameter, Sequential
from ..nn.batchnorm import BatchNormBase
from .affine import Affine
from .check import FoldedLinearCheck
from .report import FoldReport, FoldResult, require_eval_mode
from .rules import NO_RUNNING_STATS, Layer, Norm, why_not_merge
from .weights import fold_into_following, fold_into_preceding


def _data(p: Parameter | None) -> np.ndarray | None:
    return None if p is None else p.data


def bn_to_affine(bn: BatchNormBase) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift) in float64 with bn(x) == x * scale + shift per channel in eval mode."""
    if not isinstance(bn, BatchNormBase):
        raise TypeError(f"bn: expected a normlab.nn BatchNorm1d/2d/3d, got {type(bn).__name__}")
    if bn.running_mean is None:   # with buffers, eval uses them even if tracking is off
        raise ValueError("bn: expected track_running_stats=True, got False (it normalises with "
                         "batch statistics even in eval mode, so it is no fixed affine map)")
    return eval_scale_shift(bn.running_mean, bn.running_var, _data(bn.weight), _data(bn.bias),
                            bn.eps)


def fold_bn(model: Module) -> FoldResult:
    """(a folded eval-mode copy of ``model``, a report); ``model`` itself is not modified.

    Refuses (``ValueError``) a model with any module in training mode, where BN uses batch
    statistics that no fixed weights reproduce.
    """
    if not isinstance(model, Module):
        raise TypeError(f"model: expected a normlab.nn.Module, got {type(model).__name__}")
    require_eval_mode(model)
    folded = copy.deepcopy(model)
    report = FoldReport()
    uses = Counter(id(m) for m in _all_modules(folded))
    result = _fold(folded, "", report, uses)
    return FoldResult(result, report)


def _all_modules(m: Module):
    """Every module occurrence, repeats included (a shared layer is counted per use)."""
    yield m
    for child in m.children():
        yield from _all_modules(child)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _affine_of(bn: BatchNormBase) -> Affine:
    scale, shift = bn_to_affine(bn)
    affine = Affine(scale, shift, dtype=bn.running_mean.dtype)
    return affine.eval()


def _fold(module: Module, prefix: str, report: FoldReport, uses: Counter) -> Module:
    """Fold inside ``module``; returns the module to use in its place."""
    if isinstance(module, BatchNormBase):
        return _standalone(module, prefix, report, "not inside a Sequential")
    if isinstance(module, Sequential):
        return _fold_sequential(module, prefix, report, uses)
    # A custom module: its forward's data flow is unknown, so only swap each BN for its exact
    # Affine, never merge across siblings.
    for name, child in list(module._modules.items()):
        new = _fold(child, _join(prefix, name), report, uses)
        if new is not child:
            setattr(module, name, new)
    return module


def _standalone(bn: BatchNormBase, name: str, report: FoldReport, why: str) -> Module:
    if bn.running_mean is None:
        report.add_skipped(name, NO_RUNNING_STATS)
        return bn
    report.add_folded(name, f"Affine ({why})")
    return _affine_of(bn)


def _why_not_pair(layer, layer_name: str, bn: BatchNormBase, uses: Counter, *,
                  following: bool) -> str | None:
    """None if ``bn`` merges exactly into ``layer`` (before or after it), else why not
    (:func:`normlab.fold.rules.why_not_merge`)."""
    one_d = isinstance(bn, BatchNorm1d)   # (N, C) or (N, C, L); 2d/3d: 4-D, 5-D input
    norm = Norm(type(bn).__name__, bn.num_features, 1 if one_d else bn.input_ndims[0] - 2,
                None if one_d else False)
    shared = f"{layer_name} is shared (used more than once): folding would change its other " \
        "uses" if uses[id(layer)] > 1 else None
    if isinstance(layer, Linear):
        facts = Layer(layer_name, "Linear", "linear", layer.in_features, layer.out_features,
                      unusable=shared)
    elif isinstance(layer, Conv2d):
        facts = Layer(layer_name, "Conv2d", "conv", layer.in_channels, layer.out_channels, 2,
                      any(layer.padding), shared)
    else:
        facts = Layer(layer_name, type(layer).__name__, None)
    return why_not_merge(facts, norm, following=following)


def _merge(layer, bn: BatchNormBase, *, following: bool) -> None:
    """Write the folded float64 weights into ``layer``, cast to its dtype (bias created)."""
    scale, shift = bn_to_affine(bn)
    weight, bias = layer.weight.data, _data(layer.bias)
    groups = getattr(layer, "groups", 1)
    fold = fold_into_following if following else fold_into_preceding
    w, b = fold(weight, bias, scale, shift, groups=groups)
    layer.weight = Parameter(w.astype(weight.dtype))
    layer.bias = Parameter(b.astype(weight.dtype))


def _keep_rank_check(out: list[Module], out_names: list[str], layer: Module,
                     bn: BatchNormBase, name: str) -> None:
    """A BatchNorm1d merged into a Linear leaves :class:`FoldedLinearCheck` in its place: it
    also accepts (N, C, L), where the merged model would compute something else."""
    if isinstance(layer, Linear) and isinstance(bn, BatchNorm1d):
        out.append(FoldedLinearCheck(name))
        out_names.append(name)


def _fold_sequential(seq: Sequential, prefix: str, report: FoldReport,
                     uses: Counter) -> Sequential:
    layers = list(seq)
    names = [_join(prefix, str(i)) for i in range(len(layers))]
    out: list[Module] = []
    out_names: list[str] = []
    for i, layer in enumerate(layers):
        name = names[i]
        if not isinstance(layer, BatchNormBase):
            out.append(_fold(layer, name, report, uses))
            out_names.append(name)
            continue
        if layer.running_mean is None:
            out.append(_standalone(layer, name, report, ""))
            out_names.append(name)
            continue
        prev_why = ("first layer of its Sequential" if not out else
                    _why_not_pair(out[-1], out_names[-1], layer, uses, following=False))
        if prev_why is None:
            _merge(out[-1], layer, following=False)
            report.add_folded(name, out_names[-1])
            _keep_rank_check(out, out_names, out[-1], layer, name)
            continue
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        next_why = ("last layer of its Sequential" if nxt is None else
                    _why_not_pair(nxt, names[i + 1], layer, uses, following=True))
        if next_why is None:
            _merge(nxt, layer, following=True)
            report.add_folded(name, f"{names[i + 1]} (the following layer)")
            _keep_rank_check(out, out_names, nxt, layer, name)
            continue
        out.append(_standalone(layer, name, report, f"{prev_why}; {next_why}"))
        out_names.append(name)
    return Sequential(*out).eval()
