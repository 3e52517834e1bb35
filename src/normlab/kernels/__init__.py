"""The numba backend: per family the interface of the NumPy reference (:mod:`normlab.reference`).

:mod:`normlab.functional.backend` (and the NumPy engine's other layers) ask :func:`for_array`
once per call; it answers with the kernel module to use, or ``None`` for the NumPy path. The
norm kernels import only :mod:`normlab.core` (the caches and shape helpers). Nothing here
imports numba: the kernels are imported (and, on a cold cache, compiled) on their first use, so
``import normlab`` and ``normlab --version`` stay fast.

``NORMLAB_KERNELS`` chooses: ``auto`` (default: numba when it is installed), ``numba`` or
``numpy`` (force the reference path). float16 always takes the NumPy path.
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from types import ModuleType

import numpy as np

from ..core.families import FAMILIES as NORM_FAMILIES

CHOICES = ("auto", "numba", "numpy")
_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


@lru_cache(maxsize=1)
def _numba_installed() -> bool:
    return importlib.util.find_spec("numba") is not None


def backend() -> str:
    """``"numba"`` or ``"numpy"``, from ``NORMLAB_KERNELS`` (read at every call)."""
    choice = os.environ.get("NORMLAB_KERNELS", "auto").strip().lower() or "auto"
    if choice not in CHOICES:
        raise ValueError(f"NORMLAB_KERNELS: expected one of {', '.join(CHOICES)}, got {choice!r}")
    if choice == "numpy":
        return "numpy"
    if not _numba_installed():
        if choice == "numba":
            raise ValueError("NORMLAB_KERNELS: expected numba to be installed for 'numba', "
                             "got no numba module")
        return "numpy"
    return "numba"


# family -> kernel module (imported, and on a cold cache compiled, on first use); the norm
# families' from their declarations, None where a family has no kernel (the reference serves)
FAMILIES: dict[str, str | None] = {
    **{f.name: f.kernel for f in NORM_FAMILIES.values()},
    "loss": "loss", "conv": "conv", "pool": "pool", "activation": "activation", "lstm": "lstm",
    "fused": "fused"}


def for_array(x: np.ndarray, family: str) -> ModuleType | None:
    """The kernel module for ``family`` (a key of FAMILIES) if it should handle ``x``; None for
    the NumPy path, always for a family without a kernel."""
    if family not in FAMILIES:
        raise ValueError(f"family: expected one of {', '.join(map(repr, FAMILIES))}, "
                         f"got {family!r}")
    if FAMILIES[family] is None or x.dtype not in _KERNEL_DTYPES or x.size == 0 \
            or backend() != "numba":
        return None
    return load(family)


def load(family: str) -> ModuleType:
    """The kernel module of ``family``, imported on first use. Layers keep which path their
    forward took as a flag and call this in the backward: a module object in a cache would
    make the layer impossible to copy or pickle."""
    loaded = _LOADED.get(family)
    if loaded is None:
        loaded = _LOADED[family] = importlib.import_module(f"{__name__}.{FAMILIES[family]}")
    return loaded


_LOADED: dict[str, ModuleType] = {}   # the layers ask once per call: skip the import machinery
