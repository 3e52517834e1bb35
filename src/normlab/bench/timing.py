"""How ``normlab bench`` times: interleaved rounds, back-to-back loops, and the copy bandwidth
every result is compared with."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

from .adapters import numba_available


def copy_bandwidth(nbytes: int = 256 << 20, repeats: int = 5) -> dict[str, float]:
    """Machine copy bandwidth in GB/s (read + write counted): ``np.copyto`` (one thread) and,
    with numba, a copy split over all its threads. ``best`` is what the kernels are held to:
    single-threaded copy understates what two cores can stream (~2x here)."""
    src = np.ones(nbytes // 4, np.float32)
    dst = np.empty_like(src)
    result = {"one_thread": _copy_gbps(lambda: np.copyto(dst, src), src.nbytes, repeats)}
    if numba_available():
        from ..kernels.copy import threaded_copy
        rows_src, rows_dst = src.reshape(-1, 1024), dst.reshape(-1, 1024)
        result["all_threads"] = _copy_gbps(lambda: threaded_copy(rows_src, rows_dst),
                                           src.nbytes, repeats)
    result["best"] = max(result.values())
    return result


def _copy_gbps(copy: Callable[[], object], nbytes: int, repeats: int) -> float:
    copy()
    return 2 * nbytes / statistics.median(_elapsed(copy) for _ in range(repeats)) / 1e9


def _elapsed(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int
                      ) -> dict[str, list[float]]:
    for fn in fns.values():   # warm-up: numba compile/cache load, allocator, torch dispatch
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for rep in range(repeats):
        # rotate the order every round so each implementation follows every other one equally
        # often: libgomp workers spin ~1 ms after a parallel region, so a threaded call right
        # after another threaded library's shares the cores with its spinning threads
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            times[name].append(_elapsed(fns[name]))
    return times


def time_back_to_back(fns: dict[str, Callable[[], object]], repeats: int
                       ) -> dict[str, list[float]]:
    """Each implementation alone, ``repeats`` calls in a row, results dropped at once: the
    pattern of a training loop, where each step frees the previous step's outputs (so what
    the allocator does with freed tensors shows up here, see normlab/kernels/outputs.py)."""
    times: dict[str, list[float]] = {}
    for name, fn in fns.items():
        fn()
        times[name] = [_elapsed(fn) for _ in range(repeats)]
    return times
