"""The model rows of ``normlab bench``: the paper MLP and the experiments' models, NumPy
engine vs torch eager, from the scripts in ``benchmarks/`` (skipped where they are absent)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from .adapters import torch_available


def mlp_row(quick: bool) -> dict:
    """Paper-MLP training steps/s, numpy engine vs torch eager (benchmarks/bench_mlp.py)."""
    path = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_mlp.py"
    if not path.exists():
        return {"skipped": "benchmarks/bench_mlp.py (engine benchmark) is not available"}
    import importlib.util
    spec = importlib.util.spec_from_file_location("_normlab_bench_mlp", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        steps = 20 if quick else 200
        result = {"steps": steps,
                  "numpy_steps_per_s": module.mlp_steps_per_second("numpy", steps)}
        if torch_available():
            result["torch_steps_per_s"] = module.mlp_steps_per_second("torch", steps)
            result["ratio"] = result["numpy_steps_per_s"] / result["torch_steps_per_s"]
        return result
    except Exception as exc:  # the row is optional; the kernel table must still come out
        return {"skipped": f"bench_mlp failed: {type(exc).__name__}: {exc}"}


# the environment of a `normlab reproduce` worker: one thread per library
ONE_THREAD = {k: "1" for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                               "NUMBA_NUM_THREADS")}


def model_rows(quick: bool, tiny: bool, progress: Callable[[str], None] | None = None) -> dict:
    """The experiments' models, NumPy engine vs torch eager (benchmarks/bench_models.py), in a
    subprocess with one thread per library, as the reproduce workers run them."""
    path = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_models.py"
    if not path.exists():
        return {"skipped": "benchmarks/bench_models.py (model benchmark) is not available"}
    if not torch_available():
        return {"skipped": "torch is not installed"}
    steps, rounds = (2, 1) if tiny else (12, 2) if quick else (40, 5)
    if progress:
        progress("the experiments' models (one thread each)")
    with tempfile.TemporaryDirectory(prefix="normlab-bench-") as tmp:
        out = Path(tmp) / "models.json"
        proc = subprocess.run([sys.executable, str(path), "--steps", str(steps), "--rounds",
                               str(rounds), "--json", str(out)], capture_output=True, text=True,
                              env={**os.environ, **ONE_THREAD}, timeout=1800)
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            return {"skipped": f"bench_models failed: {tail[0]}"}
        return {"threads": 1, "steps": steps, "rounds": rounds,
                "rows": json.loads(out.read_text())}
