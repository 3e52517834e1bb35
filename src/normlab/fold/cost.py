"""What ``normlab fold`` will allocate for a declared architecture, bounded before anything is.

:mod:`normlab.fold.declared` bounds the parameters a spec declares; the fold itself makes more:
the arrays read from the file, the built model, the folded copy and the rebuilt model that
checks the written spec (:data:`PARAMETER_COPIES`), and two forward passes of the verification
input (the model's and the folded model's, :data:`FORWARD_COPIES`; below float64 also the
float64 rebuild that measures the rounding floor), each holding every layer's
output and its temporaries -- a convolution's zero-padded input and its im2col patch matrix,
a pool's windows. A 2.7 KB file declaring ``Conv2d(1, 1, 1, padding=7000)`` on a 1x1 input
asks for a 14001x14001 padded image, and ``Linear(16000, 16000)`` within the parameter budget
is read, built, folded and rebuilt: 4 GB. :func:`fold_cost` adds it all up from the layers'
arguments and the input shape (Python integers: no overflow), so the one budget
(:data:`normlab.fold.declared.MAX_MODEL_BYTES`) is checked before any allocation.

The shapes follow the layers' forward passes (``nn/conv.py``, ``nn/pool.py``, ``nn/flatten.py``,
``nn/linear.py``, ``nn/recurrent.py``). Where an input does not fit a layer, that layer's
forward refuses it before allocating, so the count stops there.
"""

from __future__ import annotations

import math
import numbers

# the arrays read from the file, the built model, its folded copy, the model save_model
# rebuilds to check the folded spec, and the state dict handed to it
PARAMETER_COPIES = 5
# the unfolded and the folded model each run the verification input once
FORWARD_COPIES = 2
# below float64, the unfolded model is rebuilt in float64 (its float64 state dict, then the
# model) and runs the input once more, to measure the float32 rounding floor beside the error
FLOOR_PARAMETER_COPIES = 2
FLOOR_FORWARD_COPIES = 1
# A fold archive describes a flat Sequential of at most this many layers (the largest model
# here has a few dozen): a million ReLUs took 188 s and 2.6 GB.
MAX_LAYERS = 4096
# ... and its JSON is at most this deep (spec -> layers -> layer -> kwargs -> a pair -> int)
MAX_DEPTH = 8

SAME_SHAPE = ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "InstanceNorm1d", "InstanceNorm2d",
              "InstanceNorm3d", "BatchRenorm1d", "BatchRenorm2d", "LayerNorm", "GroupNorm",
              "Affine", "FoldedLinearCheck", "ReLU", "Sigmoid", "Tanh", "Dropout", "Module",
              "CrossEntropyLoss", "MSELoss")


class Unfit(Exception):
    """The input does not fit this layer: its forward refuses it, nothing after it runs."""


def _int(value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise Unfit
    return int(value)


def _pair(value, minimum: int) -> tuple[int, int]:
    items = (value, value) if isinstance(value, numbers.Integral) else value
    if not isinstance(items, (list, tuple)) or len(items) != 2:
        raise Unfit
    return _int(items[0], minimum), _int(items[1], minimum)


def _window_out(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    out = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    if out <= 0:
        raise Unfit
    return out


def _conv2d(a: dict, shape: tuple) -> tuple[tuple, int]:
    if len(shape) != 4 or shape[1] != a["in_channels"]:
        raise Unfit
    n, c, h, w = shape
    (kh, kw), (sh, sw) = _pair(a["kernel_size"], 1), _pair(a["stride"], 1)
    (ph, pw), (dh, dw) = _pair(a["padding"], 0), _pair(a["dilation"], 1)
    ho, wo = _window_out(h, kh, sh, ph, dh), _window_out(w, kw, sw, pw, dw)
    padded = n * c * (h + 2 * ph) * (w + 2 * pw)   # np.pad's result and its working copy
    patches = n * ho * wo * c * kh * kw
    return (n, _int(a["out_channels"], 1), ho, wo), 2 * padded + patches


def _pool2d(a: dict, shape: tuple) -> tuple[tuple, int]:
    if len(shape) != 4:
        raise Unfit
    n, c, h, w = shape
    kernel = _pair(a["kernel_size"], 1)
    stride = kernel if a["stride"] is None else _pair(a["stride"], 1)
    pad = _pair(a["padding"], 0)
    ho, wo = (_window_out(s, k, st, p) for s, k, st, p in zip((h, w), kernel, stride, pad,
                                                              strict=True))
    padded = n * c * (h + 2 * pad[0]) * (w + 2 * pad[1])
    return (n, c, ho, wo), padded + n * c * ho * wo * (kernel[0] * kernel[1] + 1)


def _linear(a: dict, shape: tuple) -> tuple[tuple, int]:
    if not shape or shape[-1] != a["in_features"]:
        raise Unfit
    return (*shape[:-1], _int(a["out_features"], 1)), 0


def _flatten(a: dict, shape: tuple) -> tuple[tuple, int]:
    nd = len(shape)
    start, end = a["start_dim"], a["end_dim"]
    if not (-nd <= _int(start, -nd) < nd and -nd <= _int(end, -nd) < nd):
        raise Unfit
    start, end = start % nd, end % nd
    if start > end:
        raise Unfit
    return (*shape[:start], math.prod(shape[start:end + 1]), *shape[end + 1:]), 0


def _lstm(a: dict, shape: tuple) -> tuple[tuple, int]:
    if len(shape) != 3 or shape[2] != a["input_size"]:
        raise Unfit
    t, n, _ = shape
    h = _int(a["hidden_size"], 1)
    return (t, n, h), t * n * 16 * h   # gates, their norms and the cell state, per step


FORWARD = {"Conv2d": _conv2d, "MaxPool2d": _pool2d, "AvgPool2d": _pool2d, "Linear": _linear,
           "Flatten": _flatten, "LSTM": _lstm}


def forward_values(layers: list[tuple[str, str, dict]], shape: tuple[int, ...]) -> int:
    """Values one forward pass of ``shape`` through ``layers`` ((spec path, type, bound
    arguments)) holds at its peak: the input, every layer's output and temporaries."""
    total = math.prod(shape)
    for _, kind, arguments in layers:
        try:
            if kind in SAME_SHAPE:
                temporaries = 2 * math.prod(shape)   # a norm's centred and normalised input
            elif kind in FORWARD:
                shape, temporaries = FORWARD[kind](arguments, tuple(shape))
            else:
                raise Unfit
        except Unfit:
            break
        total += math.prod(shape) + temporaries
    return total


def fold_cost(parameter_values: int, stored_bytes: int, layers: list[tuple[str, str, dict]],
              shape: tuple[int, ...] | None, itemsize: int) -> int:
    """Bytes a fold of these layers allocates at most: the parameters in each of their copies,
    the arrays read from the file, and the verification forward passes."""
    forward = forward_values(layers, shape) if shape is not None else 0
    floor = 0 if itemsize >= 8 else 8 * (parameter_values * FLOOR_PARAMETER_COPIES
                                         + forward * FLOOR_FORWARD_COPIES)
    return (stored_bytes + parameter_values * itemsize * PARAMETER_COPIES
            + forward * itemsize * FORWARD_COPIES + floor)


def json_depth(obj, limit: int = MAX_DEPTH) -> int:
    """The nesting depth of a parsed JSON value (a scalar: 0), counted level by level without
    recursion, and not beyond ``limit + 1``."""
    depth, level = 0, [obj]
    while True:
        containers = [x for x in level if isinstance(x, (list, dict))]
        if not containers or depth > limit:
            return depth
        depth += 1
        level = [v for c in containers for v in (c.values() if isinstance(c, dict) else c)]
