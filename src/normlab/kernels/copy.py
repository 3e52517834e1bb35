"""A plain copy over all threads: the bandwidth yardstick ``normlab bench`` holds kernels to."""

from __future__ import annotations

import numba
from numba import prange


@numba.njit(cache=True, nogil=True, parallel=True)
def threaded_copy(src, dst):
    """dst[:] = src[:] for C-contiguous (rows, k) arrays, rows split over the threads."""
    for r in prange(src.shape[0]):
        s, d = src[r], dst[r]
        for j in range(s.shape[0]):
            d[j] = s[j]
