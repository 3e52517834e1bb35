"""Checks on a state dict's values that torch's ``load_state_dict`` does not make.

torch copies a NaN or fractional ``num_batches_tracked`` into its int64 buffer (NaN becomes
-2**63, 3.7 becomes 3), and NaN/inf running statistics without a word -- after which every eval
output of those channels is NaN. Shared by the NumPy engine's ``Module.load_state_dict`` and the
torch layers' ``_load_from_state_dict``, on NumPy views of the values.
"""

from __future__ import annotations

import warnings

import numpy as np

_INT64_LIMIT = 2.0 ** 63   # the first float past int64's largest value
RUNNING_STATS = ("running_mean", "running_var")


def refuse_masked(key: str, value) -> None:
    """A masked array's mask would be dropped silently by ``np.asarray`` / the copy."""
    if isinstance(value, np.ma.MaskedArray):
        raise TypeError(f"state_dict[{key!r}]: expected a plain array, got a numpy masked "
                        f"array (its mask would be ignored)")


def check_count(key: str, value: np.ndarray) -> None:
    """A count buffer (``num_batches_tracked``, ...) must be a whole number in [0, 2**63)."""
    v = np.asarray(value)
    flat = v.reshape(-1)
    if v.dtype.kind == "f":
        bad = ~np.isfinite(flat) | (flat < 0) | (flat >= _INT64_LIMIT) | (flat != np.floor(flat))
    elif v.dtype.kind == "i":
        bad = flat < 0
    elif v.dtype.kind == "u":
        bad = flat > np.iinfo(np.int64).max
    else:
        return
    if bad.any():
        raise ValueError(f"state_dict[{key!r}]: expected a whole number of batches/samples in "
                         f"[0, 2**63) (a count), got {flat[np.argmax(bad)]!r}")


def check_variance(key: str, value) -> None:
    """A running variance is never negative (NaN/inf load with a warning, like torch): eval's
    ``1 / sqrt(var + eps)`` of a negative one is NaN or a huge scale, silently."""
    v = np.asarray(value)
    if v.dtype.kind in "fiu" and (v < 0).any():
        raise ValueError(f"state_dict[{key!r}]: expected a variance >= 0 in every channel, got "
                         f"{v.reshape(-1)[np.argmax(v.reshape(-1) < 0)]!r}")


def warn_nonfinite(label: str, items: list[tuple[str, np.ndarray]], stacklevel: int = 3
                   ) -> None:
    """One warning naming each running-statistics key with NaN/inf and how many channels."""
    found = []
    for key, value in items:
        v = np.asarray(value)
        if v.dtype.kind == "f" and not np.isfinite(v).all():
            found.append(f"state_dict[{key!r}] has {int((~np.isfinite(v)).sum())} of {v.size} "
                         f"channels NaN/inf")
    if found:
        warnings.warn(f"{label}: {'; '.join(found)}: loaded as torch does, but every eval output "
                      f"of those channels will be NaN/inf (recalibrate or fix the checkpoint)",
                      RuntimeWarning, stacklevel=stacklevel)
