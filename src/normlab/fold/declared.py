"""What a saved architecture declares, checked against the arrays stored beside it.

Building a layer allocates its parameters, sized by its constructor arguments: an 894-byte
.npz whose spec says ``Linear(30000, 30000)`` and holds no weights made ``fold`` allocate and
initialise 3.6 GB before ``load_state_dict`` noticed the missing keys. So every layer's
parameter and buffer shapes are derived from its arguments alone (no allocation), summed against
a byte budget, and each one must be stored in the file with exactly that shape -- all before
anything is built. The shapes follow the layers' constructors (``tests/fold/test_fold_cli.py``
checks them against built layers).
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable

import numpy as np

from ..core.families import modules as norm_modules

Shapes = dict[str, tuple[int, ...]]

# A NumPy-engine model fold reads may declare at most this many bytes of parameters and
# buffers; the .npz may hold at most this many bytes of arrays. 1 GiB: far above any model
# this engine trains, far below what a bad file could otherwise make it allocate.
MAX_MODEL_BYTES = 1 << 30


def _size(where: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{where}.{name}: expected a positive integer, got {value!r}")
    return int(value)


def _sizes(where: str, name: str, value, count: int | None = None) -> tuple[int, ...]:
    """An int or a sequence of ints (``count`` of them when given) as a tuple of sizes."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value,) * (count or 1)
    if not isinstance(value, (list, tuple)) or not value or (count and len(value) != count):
        want = f"{count} " if count else ""
        raise ValueError(f"{where}.{name}: expected a positive integer or a list of {want}them, "
                         f"got {value!r}")
    return tuple(_size(where, name, v) for v in value)


def _linear(where: str, a: dict) -> Shapes:
    out, inp = _size(where, "out_features", a["out_features"]), _size(where, "in_features",
                                                                     a["in_features"])
    return {"weight": (out, inp), **({"bias": (out,)} if a["bias"] else {})}


def _conv2d(where: str, a: dict) -> Shapes:
    out = _size(where, "out_channels", a["out_channels"])
    inp = _size(where, "in_channels", a["in_channels"])
    groups = _size(where, "groups", a["groups"])
    kernel = _sizes(where, "kernel_size", a["kernel_size"], 2)
    return {"weight": (out, inp // groups, *kernel),
            **({"bias": (out,)} if a["bias"] else {})}


def _batch_norm(where: str, a: dict) -> Shapes:
    c = (_size(where, "num_features", a["num_features"]),)
    shapes = {"weight": c, "bias": c} if a["affine"] else {}
    if a.get("track_running_stats", True):   # BatchRenorm always tracks them
        shapes.update(running_mean=c, running_var=c, num_batches_tracked=())
    return shapes


def _trailing_norm(where: str, a: dict) -> Shapes:
    shape = _sizes(where, "normalized_shape", a["normalized_shape"])
    if not a["elementwise_affine"]:
        return {}
    return {"weight": shape, **({"bias": shape} if a.get("bias") else {})}


def _group_norm(where: str, a: dict) -> Shapes:
    c = (_size(where, "num_channels", a["num_channels"]),)
    return {"weight": c, "bias": c} if a["affine"] else {}


def _lstm(where: str, a: dict) -> Shapes:
    """The four weight matrices; the optional norms' vectors (O(hidden_size), sized by the
    weights checked here) are checked by ``load_state_dict`` after building."""
    h, inp = _size(where, "hidden_size", a["hidden_size"]), _size(where, "input_size",
                                                                   a["input_size"])
    return {"weight_ih_l0": (4 * h, inp), "weight_hh_l0": (4 * h, h), "bias_ih_l0": (4 * h,),
            "bias_hh_l0": (4 * h,)}


def _affine(where: str, a: dict) -> Shapes:
    c = (_size(where, "num_features", a["num_features"]),)
    return {"scale": c, "shift": c}


# the shape rules of normlab.core.families.SHAPE_RULES, which each norm module names
_RULES = {"batch": _batch_norm, "channels": _group_norm, "trailing": _trailing_norm}
SHAPES: dict[str, Callable[[str, dict], Shapes]] = {
    "Linear": _linear, "Conv2d": _conv2d, "LSTM": _lstm, "Affine": _affine,
    **{name: _RULES[m.shapes] for name, (_, m) in norm_modules().items()}}
# Layers that allocate nothing sized by their arguments.
NO_PARAMETERS = ("Module", "ReLU", "Sigmoid", "Tanh", "Dropout", "Flatten", "MaxPool2d",
                 "AvgPool2d", "CrossEntropyLoss", "MSELoss", "FoldedLinearCheck")


def _affine_signature(num_features: int):
    """Affine's spec form: ``{"type": "Affine", "args": [C]}`` (its constructor takes arrays)."""


def bind(where: str, kind: str, layer_type: type, args: list, kwargs: dict) -> dict:
    """{argument name: value} of ``layer_type(*args, **kwargs)``, defaults included."""
    if kind not in NO_PARAMETERS and kind not in SHAPES:   # added to nn without a rule here
        raise ValueError(f"{where}.type: {kind} is not supported in a fold archive yet")
    signature = inspect.signature(_affine_signature if kind == "Affine" else layer_type)
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise ValueError(f"{where}: bad arguments for {kind}: {exc}") from exc
    bound.apply_defaults()
    return dict(bound.arguments)


def layer_shapes(where: str, kind: str, arguments: dict) -> Shapes:
    """{state-dict key inside the layer: shape} for a layer of type ``kind`` with the
    :func:`bind` ``arguments``."""
    return {} if kind in NO_PARAMETERS else SHAPES[kind](where, arguments)


def declared_values(layers: list[tuple[str, Shapes]]) -> int:
    """How many parameter and buffer values ``layers`` declare."""
    return sum(math.prod(shape) for _, shapes in layers for shape in shapes.values())


def check_declared(layers: list[tuple[str, Shapes]], state: dict[str, np.ndarray],
                   dtype: np.dtype, max_bytes: int = MAX_MODEL_BYTES) -> None:
    """Refuse a declared architecture above ``max_bytes`` or not matching the stored arrays.

    ``layers``: (spec path such as ``architecture.layers[3]``, its :func:`layer_shapes`), in
    order; layer i's keys are stored as ``f"{i}.{key}"``.
    """
    total = declared_values(layers)
    if total * dtype.itemsize > max_bytes:
        raise ValueError(f"architecture: expected at most {max_bytes} bytes of parameters "
                         f"(normlab.fold.declared.MAX_MODEL_BYTES), got layers declaring "
                         f"{total} {dtype} values ({total * dtype.itemsize} bytes)")
    for i, (where, shapes) in enumerate(layers):
        for key, shape in shapes.items():
            stored = state.get(f"{i}.{key}")
            if stored is None:
                raise ValueError(f"{where}: expected the file to hold {i}.{key} of shape "
                                 f"{shape} for this layer, got no such array")
            if tuple(stored.shape) != shape:
                raise ValueError(f"{where}: expected {i}.{key} of shape {shape} as the layer's "
                                 f"arguments declare, got {tuple(stored.shape)} in the file")
            # a cast would drop a complex part or turn bools and ints into weights silently
            want = "iu" if key == "num_batches_tracked" else "f"
            if stored.dtype.kind not in want:
                raise ValueError(f"{where}: expected {i}.{key} as "
                                 f"{'integers' if want == 'iu' else 'floating-point values'}, "
                                 f"got {stored.dtype} in the file")
