"""Argument checks shared by every public entry point.

Each check raises before any state changes, with a message that names the argument, what was
expected and what was given -- the contract every layer and CLI command relies on.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

FLOAT_DTYPES = (np.float16, np.float32, np.float64)


def as_float_array(name: str, x) -> np.ndarray:
    """Return ``x`` as an ndarray of a floating dtype, or raise ``TypeError``.

    Lists are refused rather than silently converted: a list of ints would otherwise turn into an
    int64 array and a list of Python floats into float64, neither of which the caller asked for.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray of float16/float32/float64, "
                        f"got {type(x).__name__}")
    if x.dtype.type not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected a floating dtype (float16, float32 or float64), "
                        f"got {x.dtype}")
    return x


def check_ndim(name: str, x: np.ndarray, allowed: tuple[int, ...], what: str = "") -> None:
    if x.ndim not in allowed:
        names = [f"{d}D" for d in allowed]
        want = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
        extra = f" {what}" if what else ""
        raise ValueError(f"{name}: expected {want} input{extra}, got {x.ndim}D input of shape "
                         f"{tuple(x.shape)}")


def check_eps(eps) -> float:
    # inf is refused too: it would silently zero every output
    if (isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps > 0
            or not math.isfinite(eps)):
        raise ValueError(f"eps: expected a positive finite number, got {eps!r}")
    return float(eps)


def check_momentum(momentum) -> float | None:
    if momentum is None:
        return None
    if (isinstance(momentum, bool) or not isinstance(momentum, numbers.Real)
            or not 0.0 <= momentum <= 1.0):
        raise ValueError(f"momentum: expected a number in [0, 1] or None, got {momentum!r}")
    return float(momentum)


def check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def check_param(name: str, p, shape: tuple[int, ...]) -> None:
    """An optional affine parameter or running statistic must have exactly ``shape``."""
    if p is None:
        return
    if not isinstance(p, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray of shape {shape} or None, "
                        f"got {type(p).__name__}")
    if p.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {tuple(p.shape)}")


def check_grad(name: str, g, shape: tuple[int, ...]) -> np.ndarray:
    """An upstream gradient must be a float array of exactly the forward output's ``shape``.

    Broadcasting is refused: a (1, C) ``dy`` against an (N, C) output would give silently wrong
    parameter sums, and the compiled kernels index ``dy`` with the output's shape.
    """
    g = as_float_array(name, g)
    if g.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)} (the forward output's), "
                         f"got {tuple(g.shape)}")
    return g
