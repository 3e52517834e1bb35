"""The one place a norm family's backend is chosen: the numba kernels or the NumPy reference.

Both implement the same small interface per family (see :mod:`normlab.reference`): the kernels
when ``NORMLAB_KERNELS`` and the array allow (:func:`normlab.kernels.for_array`: numba
installed, float32/float64, not empty), the NumPy reference otherwise. ``import normlab`` stays
free of numba: the kernel modules are imported on first use.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import numpy as np

from .. import kernels
from ..core.families import FAMILIES


def reference(family: str) -> ModuleType:
    """The NumPy reference of ``family``: :mod:`normlab.reference` ``.<family>``, which every
    declared family has (:mod:`normlab.core.families`)."""
    found = _REFERENCE.get(family)
    if found is None:
        if family not in FAMILIES:
            raise ValueError(f"family: expected one of {', '.join(map(repr, FAMILIES))}, "
                             f"got {family!r}")
        found = _REFERENCE[family] = importlib.import_module(f"..reference.{family}", __package__)
    return found


_REFERENCE: dict[str, ModuleType] = {}   # asked once per call: skip the import machinery


def for_array(x: np.ndarray, family: str) -> ModuleType:
    """The backend module of ``family`` (a key of :data:`normlab.core.families.FAMILIES`) for
    input ``x``."""
    return kernels.for_array(x, family) or reference(family)


def for_cache(cache, family: str) -> ModuleType:
    """The backend whose backward takes ``cache``: the batch kernels take a cache of either
    backend (a saved x_hat is x with mean 0 and gain 1 to them), the layer and group kernels
    only their own (they re-derive x_hat from the saved x)."""
    if family != "batch" and not cache.saved_is_input:
        return reference(family)
    return for_array(cache.saved, family)
