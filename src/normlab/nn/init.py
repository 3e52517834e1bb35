"""Weight initialisation, with every random draw taken from an explicit numpy Generator.

Reproducibility: each function (and each layer's ``rng=`` argument) accepts a
``numpy.random.Generator``, an integer seed, or None. None means the module-level generator
:data:`default_generator`, seeded with 0 at import and re-seeded by :func:`manual_seed` (the
analogue of ``torch.manual_seed``): building the same model twice after the same
``manual_seed(s)`` gives bit-identical weights.

Formulas:

- :func:`normal`: N(0, std^2), the textbook's ``weight_init_std`` (Deep Learning from Scratch 6.2).
- :func:`xavier_uniform` / :func:`xavier_normal`: Glorot & Bengio 2010, Var = 2/(fan_in+fan_out).
- :func:`kaiming_uniform` / :func:`kaiming_normal`: He et al. 2015, Var = gain^2/fan_in.
- :func:`torch_default`: what ``torch.nn.Linear``/``Conv2d.reset_parameters`` draw, i.e.
  kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the weight and the same
  bound for the bias, so a fresh normlab model has torch's weight distribution.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

default_generator: np.random.Generator = np.random.default_rng(0)


def manual_seed(seed: int) -> np.random.Generator:
    """Re-seed the module-level generator used when ``rng`` is None; returns it."""
    global default_generator
    default_generator = np.random.default_rng(_check_seed(seed))
    return default_generator


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    return int(seed)


def get_rng(rng: np.random.Generator | int | None = None) -> np.random.Generator:
    """A Generator from a Generator (returned as is), a seed, or None (the module default)."""
    if rng is None:
        return default_generator
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(_check_seed(rng))


def fan_in_out(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) as torch computes them: ``(out, in, *kernel)`` weights."""
    if len(shape) < 2:
        raise ValueError(f"shape: expected at least 2 dims (out, in, ...), got {shape}")
    receptive = int(np.prod(shape[2:], dtype=np.int64)) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def calculate_gain(nonlinearity: str, a: float = 0.0) -> float:
    """Recommended std gain per nonlinearity (torch.nn.init.calculate_gain's table)."""
    gains = {"linear": 1.0, "conv2d": 1.0, "sigmoid": 1.0, "tanh": 5.0 / 3,
             "relu": math.sqrt(2.0), "leaky_relu": math.sqrt(2.0 / (1 + a * a))}
    if nonlinearity not in gains:
        raise ValueError(f"nonlinearity: expected one of {sorted(gains)}, got {nonlinearity!r}")
    return gains[nonlinearity]


def uniform(shape, bound: float, rng=None, dtype=np.float32) -> np.ndarray:
    """U(-bound, bound)."""
    return get_rng(rng).uniform(-bound, bound, size=shape).astype(dtype)


def normal(shape, std: float = 0.01, rng=None, dtype=np.float32) -> np.ndarray:
    """N(0, std^2): the textbook's ``weight_init_std * np.random.randn(...)``."""
    return (std * get_rng(rng).standard_normal(size=shape)).astype(dtype)


def xavier_uniform(shape, gain: float = 1.0, rng=None, dtype=np.float32) -> np.ndarray:
    """Glorot & Bengio 2010, eq. 16: U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = fan_in_out(tuple(shape))
    return uniform(shape, gain * math.sqrt(6.0 / (fan_in + fan_out)), rng, dtype)


def xavier_normal(shape, gain: float = 1.0, rng=None, dtype=np.float32) -> np.ndarray:
    """Glorot & Bengio 2010: N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = fan_in_out(tuple(shape))
    return normal(shape, gain * math.sqrt(2.0 / (fan_in + fan_out)), rng, dtype)


def kaiming_uniform(shape, a: float = 0.0, nonlinearity: str = "leaky_relu", rng=None,
                    dtype=np.float32) -> np.ndarray:
    """He et al. 2015, sec. 2.2: U(-b, b) with b = gain * sqrt(3 / fan_in), gain from
    :func:`calculate_gain`."""
    fan_in, _ = fan_in_out(tuple(shape))
    std = calculate_gain(nonlinearity, a) / math.sqrt(fan_in)
    return uniform(shape, math.sqrt(3.0) * std, rng, dtype)


def kaiming_normal(shape, a: float = 0.0, nonlinearity: str = "relu", rng=None,
                   dtype=np.float32) -> np.ndarray:
    """He et al. 2015, eq. 10: N(0, std^2) with std = gain / sqrt(fan_in)."""
    fan_in, _ = fan_in_out(tuple(shape))
    return normal(shape, calculate_gain(nonlinearity, a) / math.sqrt(fan_in), rng, dtype)


def torch_default(weight_shape, bias: bool = True, rng=None, dtype=np.float32
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """(weight, bias) distributed as torch's default Linear/Conv initialisation."""
    rng = get_rng(rng)
    weight = kaiming_uniform(weight_shape, a=math.sqrt(5.0), rng=rng, dtype=dtype)
    if not bias:
        return weight, None
    fan_in, _ = fan_in_out(tuple(weight_shape))
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return weight, uniform((weight_shape[0],), bound, rng, dtype)
