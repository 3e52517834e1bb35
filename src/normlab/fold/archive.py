"""A NumPy-engine ``Sequential`` saved as one .npz: its state dict plus its architecture.

The architecture is a small JSON spec stored under the key ``__architecture__`` (a string array,
so ``np.load(allow_pickle=False)`` reads it; no code is ever unpickled)::

    {"format": "normlab.sequential/1", "dtype": "float32",
     "layers": [{"type": "Conv2d", "args": [3, 8, 3], "kwargs": {"padding": 1}},
                {"type": "BatchNorm2d", "args": [8]}, {"type": "ReLU"}, ...]}

``type`` names a layer of ``normlab.nn`` (or ``Affine``, ``FoldedLinearCheck``); ``args`` and
``kwargs`` are its constructor arguments. Only flat Sequentials are described: honest and
enough for the ``fold`` command.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import numpy as np

from .. import nn
from ..serialization import read_state_dict, save, stored_bytes
from .affine import Affine
from .check import FoldedLinearCheck
from .cost import MAX_DEPTH, MAX_LAYERS, fold_cost, json_depth
from .declared import (
    MAX_MODEL_BYTES,
    Shapes,
    bind,
    check_declared,
    declared_values,
    layer_shapes,
)
from .report import FoldReport

FORMAT = "normlab.sequential/1"
KEY = "__architecture__"
# The spec's stored JSON (a NumPy unicode array: 4 bytes a character, about 60 characters a
# layer, so MAX_LAYERS of them need a quarter of this): a larger one is refused before it is
# parsed into Python objects (a million ReLUs, 72 MB stored, took 340 MB and a second).
MAX_SPEC_BYTES = 1 << 22


def _layer_types() -> dict[str, type]:
    types = {name: getattr(nn, name) for name in nn.__all__}
    types = {k: v for k, v in types.items()
             if isinstance(v, type) and issubclass(v, nn.Module) and v is not nn.Sequential}
    types["Affine"] = Affine
    types["FoldedLinearCheck"] = FoldedLinearCheck
    return types


def _layers(spec: dict) -> tuple[np.dtype, list[tuple[str, str, list, dict]]]:
    """(dtype, [(spec path, type, args, kwargs)]) of a spec; raises ValueError on a bad one."""
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise ValueError(f"architecture: expected a dict with format {FORMAT!r}, "
                         f"got {str(spec)[:80]!r}")
    dtype = spec.get("dtype", "float32")
    if dtype not in ("float16", "float32", "float64"):
        raise ValueError(f"architecture.dtype: expected float16/float32/float64, got {dtype!r}")
    layers_spec = spec.get("layers")
    if not isinstance(layers_spec, list) or not layers_spec:
        raise ValueError(f"architecture.layers: expected a non-empty list, got "
                         f"{str(layers_spec)[:80]!r}")
    if len(layers_spec) > MAX_LAYERS:
        raise ValueError(f"architecture.layers: expected at most {MAX_LAYERS} layers "
                         f"(normlab.fold.cost.MAX_LAYERS), got {len(layers_spec)}")
    types = _layer_types()
    layers = []
    for i, entry in enumerate(layers_spec):
        where = f"architecture.layers[{i}]"
        kind = entry.get("type") if isinstance(entry, dict) else None
        if not isinstance(kind, str) or kind not in types:
            raise ValueError(f"{where}.type: expected one of {', '.join(sorted(types))}, "
                             f"got {str(kind)[:80]!r}")
        args, kwargs = entry.get("args", []), entry.get("kwargs", {})
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise ValueError(f"{where}: expected args as a list and kwargs as an object, got "
                             f"{type(args).__name__} and {type(kwargs).__name__}")
        layers.append((where, kind, list(args), dict(kwargs)))
    return np.dtype(dtype), layers


def bound_layers(spec: dict) -> tuple[np.dtype, list[tuple[str, str, dict]]]:
    """(dtype, [(spec path, type, {argument: value})]) of ``spec``, without building it."""
    dtype, layers = _layers(spec)
    types = _layer_types()
    return dtype, [(where, kind, bind(where, kind, types[kind], args, kwargs))
                   for where, kind, args, kwargs in layers]


def declared_shapes(spec: dict) -> tuple[np.dtype, list[tuple[str, Shapes]]]:
    """What :func:`build` would allocate for ``spec``, computed without allocating it."""
    dtype, layers = bound_layers(spec)
    return dtype, [(where, layer_shapes(where, kind, a)) for where, kind, a in layers]


def build(spec: dict) -> nn.Sequential:
    """The (freshly initialised) Sequential a spec describes; raises ValueError on a bad spec."""
    dtype, layers_spec = _layers(spec)
    types = _layer_types()
    layers = []
    for where, kind, args, kwargs in layers_spec:
        if kind == "Affine":
            (c,) = args or [kwargs.pop("num_features")]
            layers.append(Affine(np.ones(c), np.zeros(c), dtype=dtype.type))
            continue
        if "dtype" in inspect.signature(types[kind]).parameters:
            kwargs["dtype"] = dtype.type
        try:
            layers.append(types[kind](*args, **kwargs))
        except TypeError as exc:
            raise ValueError(f"{where}: bad arguments for {kind}: {exc}") from exc
    return nn.Sequential(*layers)


def save_model(path: str | os.PathLike, spec: dict, model: nn.Sequential) -> Path:
    """Write ``model``'s state dict and its ``spec`` to one .npz (atomically)."""
    build(spec).load_state_dict(model.state_dict())  # the spec must describe this model
    state = model.state_dict()
    state[KEY] = np.array(json.dumps(spec))
    return save(state, path)


def load_model(path: str | os.PathLike, max_bytes: int = MAX_MODEL_BYTES,
               input_shape: tuple[int, ...] | None = None) -> tuple[dict, nn.Sequential]:
    """(spec, model) from an .npz written by :func:`save_model`.

    Nothing is allocated that the file does not back or the budget does not allow: the spec
    is read first (alone); what folding it allocates -- every copy of the parameters and, for
    ``input_shape``, the verification forward passes (:func:`normlab.fold.cost.fold_cost`) --
    must fit in ``max_bytes``; only then are the arrays read, and the layers are built only
    after the shapes their arguments declare are found in the file (see
    :mod:`normlab.fold.declared`).
    """
    sizes = stored_bytes(path)
    if sizes.get(KEY, 0) > MAX_SPEC_BYTES:
        raise ValueError(f"architecture: expected a spec of at most {MAX_SPEC_BYTES} bytes "
                         f"(normlab.fold.archive.MAX_SPEC_BYTES), got {sizes[KEY]} bytes in "
                         f"{str(path)!r}")
    head = read_state_dict(path, max_bytes=max_bytes, keys=(KEY,))
    if KEY not in head:
        raise ValueError(f"model: {str(path)!r} has no {KEY!r} entry: a plain state dict does "
                         "not say which layers it belongs to (save it with "
                         "normlab.fold.archive.save_model)")
    try:
        spec = json.loads(str(head.pop(KEY)))
    except (ValueError, RecursionError) as exc:   # RecursionError: nested 10**5 deep;
        # ValueError: also an integer of more than 4300 digits
        raise ValueError(f"model: {KEY!r} in {str(path)!r} is not valid JSON: {exc}") from exc
    if json_depth(spec) > MAX_DEPTH:
        raise ValueError(f"architecture: expected JSON nested at most {MAX_DEPTH} deep "
                         f"(normlab.fold.cost.MAX_DEPTH), got deeper nesting in {str(path)!r}")
    dtype, layers = bound_layers(spec)
    shapes = [(where, layer_shapes(where, kind, a)) for where, kind, a in layers]
    values = declared_values(shapes)
    cost = fold_cost(values, sum(sizes.values()), layers, input_shape, dtype.itemsize)
    if cost > max_bytes:
        what = f" and a {'x'.join(map(str, input_shape))} input" if input_shape else ""
        raise ValueError(f"architecture: expected at most {max_bytes} bytes for the fold "
                         f"(normlab.fold.declared.MAX_MODEL_BYTES), got layers declaring "
                         f"{values} {dtype} values{what}: {cost} bytes with the parameters' "
                         f"copies and the verification's activations (normlab.fold.cost)")
    state = read_state_dict(path, max_bytes=max_bytes)
    state.pop(KEY)
    check_declared(shapes, state, dtype, max_bytes)
    model = build(spec)
    model.load_state_dict(state)
    return spec, model


def folded_spec(spec: dict, folded: nn.Sequential, report: FoldReport) -> dict:
    """The spec of ``folded``, the output of ``fold_bn(build(spec))`` with its ``report``.

    Folding only drops BatchNorms (merged; one merged into a Linear leaves a
    FoldedLinearCheck), turns some into Affine and gives Linear/Conv2d a bias; the report says
    which, by the original layer index.
    """
    merged_into = dict(report.folded)
    checks = {layer.bn_name for layer in folded if isinstance(layer, FoldedLinearCheck)}
    kept = []
    for i, entry in enumerate(spec["layers"]):
        into = merged_into.get(str(i))
        if into is None:
            kept.append(dict(entry))
        elif into.startswith("Affine"):
            kept.append({"type": "Affine"})
        elif str(i) in checks:   # merged into a Linear: the rank check stays in its place
            kept.append({"type": "FoldedLinearCheck", "args": [str(i)]})
    if len(kept) != len(folded):
        raise AssertionError("folded model and report disagree")  # a bug, not bad input
    for entry, layer in zip(kept, folded, strict=True):
        if entry["type"] == "Affine":
            entry["args"] = [layer.num_features]
        if entry["type"] in ("Linear", "Conv2d") and layer.bias is not None:
            entry["kwargs"] = {**entry.get("kwargs", {}), "bias": True}
    return {**spec, "layers": kept}
