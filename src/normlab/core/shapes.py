"""Axes, broadcasting views and dtypes shared by every norm family and both backends."""

from __future__ import annotations

import math

import numpy as np


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """Accumulation dtype: float16 is widened to float32; float32/float64 stay as they are."""
    return np.dtype(np.float32) if np.dtype(dtype) == np.float16 else np.dtype(dtype)


def count(shape: tuple[int, ...], axes: tuple[int, ...]) -> int:
    """Number of elements each statistic is taken over (the paper's ``m``)."""
    # math.prod on Python ints: exact, and far cheaper than np.prod for a handful of dims
    # (this runs several times per training step of every norm layer)
    return math.prod([shape[a] for a in axes])


def channel_axes(ndim: int) -> tuple[int, ...]:
    """Every axis but the channel axis 1: (0,) for (N,C), (0,2,3) for (N,C,H,W), ..."""
    return (0, *range(2, ndim))


def per_channel(v: np.ndarray, ndim: int) -> np.ndarray:
    """View a (C,) vector as (1, C, 1, ...) so it broadcasts against an ndim-D input."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))
