"""The statistics helper under its public path: it lives in :mod:`normlab.core.stats`, the leaf
both backends import (two-pass moments, float16 accumulated in float32)."""

from ..core.stats import (
    Normalized,
    compute_dtype,
    count,
    moments,
    normalize,
    normalize_backward,
    recentre,
    standardize,
)

__all__ = ["Normalized", "compute_dtype", "count", "moments", "normalize", "normalize_backward",
           "recentre", "standardize"]
