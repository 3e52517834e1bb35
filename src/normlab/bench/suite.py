"""``normlab bench``: normalisation speed against the textbook code and PyTorch CPU eager.

All implementations run in one process, interleaved (rep 1 of every implementation, then rep 2,
..., the order rotating each round), and each cell is the median of its repetitions: the
machine's noise (~2x between runs on a shared 2-core box) then hits every implementation alike
and ratios stay meaningful. A third mode, "fwd+bwd loop", times each implementation alone,
back to back, as a training loop calls it: there a step's freshly freed outputs meet the next
step's allocations, which interleaving hides.

Byte model (what "GB/s" counts): the minimum traffic of the computation over whole arrays of
the input's size S bytes -- training forward+backward reads x, writes y, reads x and dy, writes
dx: 5 S; eval (or LayerNorm/GroupNorm) forward reads x, writes y: 2 S. Parameter vectors and
re-reads that hit cache are not counted. Copy bandwidth is the faster of ``np.copyto`` and a
copy over all numba threads of a 256 MB array, counted as read + write (2 x its size) per copy,
the same way. The copies write into an existing array, while every implementation timed here
returns new outputs; where that memory comes from (fresh pages fault on first write, reused
ones may have left the cache) is part of what users pay and part of every timing.
"""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Callable

import numpy as np

from .adapters import normlab_impl, numba_available, textbook_impl, torch_available, torch_impl
from .cases import EVAL_BYTES, FULL_CASES, MODES, TINY_CASES, TRAIN_BYTES, make_input
from .models import mlp_row, model_rows
from .timing import copy_bandwidth, time_back_to_back, time_interleaved


def run(quick: bool = False, tiny: bool = False, progress: Callable[[str], None] | None = None
        ) -> dict:
    """Run the suite and return the JSON-ready result."""
    cases = TINY_CASES if tiny else FULL_CASES
    repeats = 3 if tiny else (5 if quick else 11)
    have_torch, have_numba = torch_available(), numba_available()
    torch_threads = None
    if have_torch:
        import torch
        torch_threads = torch.get_num_threads()
    copy = copy_bandwidth(nbytes=(8 << 20) if tiny else (256 << 20))
    copy_gbps = copy["best"]
    rng = np.random.default_rng(0)
    rows = []
    for case in cases:
        if progress:
            progress(f"{case.name} {case.shape}")
        x = make_input(case, rng)
        dy = np.ascontiguousarray(rng.standard_normal(x.shape, dtype=np.float32))
        if case.channels_last:   # the gradient arrives in the activation's layout
            dy = np.ascontiguousarray(np.moveaxis(dy, 1, -1)).transpose(0, 3, 1, 2)
        impls: dict[str, dict[str, Callable[[], object]]] = {}
        if have_numba:
            impls["normlab-numba"] = normlab_impl(case, x, dy, "numba")
        impls["normlab-numpy"] = normlab_impl(case, x, dy, "numpy")
        if case.family == "batch":
            impls["textbook"] = textbook_impl(case, x, dy)
        if have_torch:
            impls["torch"] = torch_impl(case, x, dy)
        for mode, closure, per_byte, _, method in MODES:
            timer = time_interleaved if method == "interleaved" else time_back_to_back
            times = timer({k: v[closure] for k, v in impls.items()}, repeats)
            medians = {k: statistics.median(v) for k, v in times.items()}
            for impl, t in medians.items():
                gbps = per_byte * x.nbytes / t / 1e9
                rows.append({
                    "case": case.name, "shape": list(case.shape), "family": case.family,
                    "layout": "NHWC" if case.channels_last else "contiguous",
                    "dtype": "float32", "mode": mode, "impl": impl, "median_s": t,
                    "times_s": times[impl], "gbps": gbps, "copy_fraction": gbps / copy_gbps,
                    "speedup_vs_torch": medians["torch"] / t if "torch" in medians else None,
                    "note": case.note,
                })
    return {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "numpy": np.__version__, "torch_threads": torch_threads,
                    "numba_threads": _numba_threads() if have_numba else None},
        "repeats": repeats, "statistic": "median",
        "modes": {mode: f"{label}, {method}" for mode, _, _, label, method in MODES},
        "copy_gbps": copy_gbps, "copy_gbps_by_threads": copy,
        "byte_model": {"train": f"{TRAIN_BYTES} x input bytes (read x, write y, read x and dy, "
                                "write dx)",
                       "eval": f"{EVAL_BYTES} x input bytes (read x, write y)",
                       "copy": "2 x array bytes per copy (read + write), the faster of "
                               "np.copyto and a copy over all numba threads"},
        "rows": rows,
        "mlp": mlp_row(quick or tiny),
        "models": model_rows(quick, tiny, progress),
    }


def _numba_threads() -> int:
    import numba
    return numba.get_num_threads()
