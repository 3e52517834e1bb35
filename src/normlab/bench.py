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

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import functional as F
from ._io import atomic_write_text
from .bench_textbook import TextbookBatchNorm

TRAIN_BYTES, EVAL_BYTES = 5, 2   # multiples of the input size, see the module docstring
# (mode, closure it times, bytes per input byte, label, timing method)
MODES = (("train", "train", TRAIN_BYTES, "fwd+bwd", "interleaved"),
         ("eval", "eval", EVAL_BYTES, "fwd", "interleaved"),
         ("loop", "train", TRAIN_BYTES, "fwd+bwd loop", "back to back"))
LABELS = {mode: label for mode, _, _, label, _ in MODES}


@dataclass(frozen=True)
class Case:
    name: str
    family: str                    # "batch", "layer" or "group"
    shape: tuple[int, ...]
    channels_last: bool = False
    note: str = ""


FULL_CASES = (
    Case("BN1d", "batch", (256, 1024)),
    Case("BN1d", "batch", (60, 100)),
    Case("BN2d", "batch", (32, 64, 56, 56)),
    Case("BN2d", "batch", (8, 256, 28, 28)),
    Case("BN2d NHWC", "batch", (32, 64, 56, 56), channels_last=True,
         note="(N,C,H,W) view of a contiguous (32,56,56,64) array"),
    Case("LayerNorm", "layer", (16, 512, 768),
         note="shrunk from (64,512,768) to 16 sequences: 4 arrays of 400 MB would not fit "
              "beside the other jobs on this machine"),
    Case("GroupNorm(32)", "group", (16, 256, 28, 28)),
)
TINY_CASES = (
    Case("BN1d", "batch", (16, 8)),
    Case("BN2d", "batch", (4, 3, 5, 5)),
    Case("BN2d NHWC", "batch", (4, 3, 5, 5), channels_last=True),
    Case("LayerNorm", "layer", (2, 4, 8)),
    Case("GroupNorm(32)", "group", (2, 32, 2, 2)),
)


def _input(case: Case, rng: np.random.Generator) -> np.ndarray:
    if case.channels_last:
        n, c, *sp = case.shape
        return rng.standard_normal((n, *sp, c), dtype=np.float32).transpose(0, 3, 1, 2)
    return rng.standard_normal(case.shape, dtype=np.float32)


def _normlab(case: Case, x: np.ndarray, dy: np.ndarray, backend: str
             ) -> dict[str, Callable[[], object]]:
    """Training fwd+bwd and eval closures for normlab with ``NORMLAB_KERNELS=backend``."""
    c = x.shape[1]
    w, b = np.ones(c, np.float32), np.zeros(c, np.float32)
    if case.family == "batch":
        def train():
            y, cache = F.batch_norm_train(x, w, b)
            return F.batch_norm_backward(dy, cache)

        running_mean, running_var = np.zeros(c, np.float32), np.ones(c, np.float32)

        def evaluate():
            return F.batch_norm_eval(x, running_mean, running_var, w, b)
    elif case.family == "layer":
        d = x.shape[-1:]
        w, b = np.ones(d, np.float32), np.zeros(d, np.float32)

        def train():
            y, cache = F.layer_norm_forward(x, d, w, b)
            return F.layer_norm_backward(dy, cache)

        def evaluate():
            return F.layer_norm_forward(x, d, w, b)[0]
    else:
        def train():
            y, cache = F.group_norm_forward(x, 32, w, b)
            return F.group_norm_backward(dy, cache)

        def evaluate():
            return F.group_norm_forward(x, 32, w, b)[0]
    return {"train": _with_backend(train, backend), "eval": _with_backend(evaluate, backend)}


def _with_backend(fn: Callable[[], object], backend: str) -> Callable[[], object]:
    def run():
        old = os.environ.get("NORMLAB_KERNELS")
        os.environ["NORMLAB_KERNELS"] = backend
        try:
            return fn()
        finally:
            if old is None:
                del os.environ["NORMLAB_KERNELS"]
            else:
                os.environ["NORMLAB_KERNELS"] = old
    return run


def _textbook(case: Case, x: np.ndarray, dy: np.ndarray) -> dict[str, Callable[[], object]]:
    d = int(np.prod(x.shape[1:]))
    layer = TextbookBatchNorm(np.ones(d, np.float32), np.zeros(d, np.float32))
    layer.forward(x, train_flg=True)

    def train():
        layer.forward(x, train_flg=True)
        return layer.backward(dy)

    return {"train": train, "eval": lambda: layer.forward(x, train_flg=False)}


def _torch(case: Case, x: np.ndarray, dy: np.ndarray) -> dict[str, Callable[[], object]]:
    import torch

    c = x.shape[1]
    if case.family == "batch":
        layer = (torch.nn.BatchNorm1d if x.ndim == 2 else torch.nn.BatchNorm2d)(c)
    elif case.family == "layer":
        layer = torch.nn.LayerNorm(x.shape[-1])
    else:
        layer = torch.nn.GroupNorm(32, c)
    tx = torch.from_numpy(x).requires_grad_(True)   # keeps x's strides: NHWC stays NHWC
    tdy = torch.from_numpy(dy)

    def train():
        tx.grad = None
        layer.zero_grad(set_to_none=True)
        layer.train()
        layer(tx).backward(tdy)
        return tx.grad

    def evaluate():
        layer.eval()
        with torch.no_grad():
            return layer(tx)

    return {"train": train, "eval": evaluate}


def _torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _numba_available() -> bool:
    import importlib.util
    return importlib.util.find_spec("numba") is not None


def copy_bandwidth(nbytes: int = 256 << 20, repeats: int = 5) -> dict[str, float]:
    """Machine copy bandwidth in GB/s (read + write counted): ``np.copyto`` (one thread) and,
    with numba, a copy split over all its threads. ``best`` is what the kernels are held to:
    single-threaded copy understates what two cores can stream (~2x here)."""
    src = np.ones(nbytes // 4, np.float32)
    dst = np.empty_like(src)
    result = {"one_thread": _copy_gbps(lambda: np.copyto(dst, src), src.nbytes, repeats)}
    if _numba_available():
        from .kernels.copy import threaded_copy
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


def _time_interleaved(fns: dict[str, Callable[[], object]], repeats: int
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


def _time_back_to_back(fns: dict[str, Callable[[], object]], repeats: int
                       ) -> dict[str, list[float]]:
    """Each implementation alone, ``repeats`` calls in a row, results dropped at once: the
    pattern of a training loop, where each step frees the previous step's outputs (so what
    the allocator does with freed tensors shows up here, see normlab/kernels/outputs.py)."""
    times: dict[str, list[float]] = {}
    for name, fn in fns.items():
        fn()
        times[name] = [_elapsed(fn) for _ in range(repeats)]
    return times


def run(quick: bool = False, tiny: bool = False, progress: Callable[[str], None] | None = None
        ) -> dict:
    """Run the suite and return the JSON-ready result."""
    cases = TINY_CASES if tiny else FULL_CASES
    repeats = 3 if tiny else (5 if quick else 11)
    have_torch, have_numba = _torch_available(), _numba_available()
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
        x = _input(case, rng)
        dy = np.ascontiguousarray(rng.standard_normal(x.shape, dtype=np.float32))
        if case.channels_last:   # the gradient arrives in the activation's layout
            dy = np.ascontiguousarray(np.moveaxis(dy, 1, -1)).transpose(0, 3, 1, 2)
        impls: dict[str, dict[str, Callable[[], object]]] = {}
        if have_numba:
            impls["normlab-numba"] = _normlab(case, x, dy, "numba")
        impls["normlab-numpy"] = _normlab(case, x, dy, "numpy")
        if case.family == "batch":
            impls["textbook"] = _textbook(case, x, dy)
        if have_torch:
            impls["torch"] = _torch(case, x, dy)
        for mode, closure, per_byte, _, method in MODES:
            timer = _time_interleaved if method == "interleaved" else _time_back_to_back
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
        "mlp": _mlp_row(quick or tiny),
        "models": _model_rows(quick, tiny, progress),
    }


def _numba_threads() -> int:
    import numba
    return numba.get_num_threads()


def _mlp_row(quick: bool) -> dict:
    """Paper-MLP training steps/s, numpy engine vs torch eager (benchmarks/bench_mlp.py)."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_mlp.py"
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
        if _torch_available():
            result["torch_steps_per_s"] = module.mlp_steps_per_second("torch", steps)
            result["ratio"] = result["numpy_steps_per_s"] / result["torch_steps_per_s"]
        return result
    except Exception as exc:  # the row is optional; the kernel table must still come out
        return {"skipped": f"bench_mlp failed: {type(exc).__name__}: {exc}"}


# the environment of a `normlab reproduce` worker: one thread per library
ONE_THREAD = {k: "1" for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                               "NUMBA_NUM_THREADS")}


def _model_rows(quick: bool, tiny: bool, progress: Callable[[str], None] | None = None) -> dict:
    """The experiments' models, NumPy engine vs torch eager (benchmarks/bench_models.py), in a
    subprocess with one thread per library, as the reproduce workers run them."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_models.py"
    if not path.exists():
        return {"skipped": "benchmarks/bench_models.py (model benchmark) is not available"}
    if not _torch_available():
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


def check_json_path(path: Path) -> Path:
    """Refuse a ``--json`` PATH that could not be written, BEFORE the minutes of timing: a
    directory, or a folder (its nearest existing one, the rest is created at the end) where no
    file can be made. Checked by making and removing a temporary file there, which is what
    the final atomic write does (permission bits alone say nothing for root)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--json: expected a file path, got the directory {str(path)!r}")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"--json: expected a path in a folder, got {str(path)!r} "
                         f"({str(folder)!r} is a file)")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".normlab-bench-", suffix=".tmp"):
            pass
    except OSError as exc:
        raise ValueError(f"--json: expected a writable place, got {str(path)!r} "
                         f"({exc.strerror or exc})") from exc
    return path


def write_json(result: dict, path: Path) -> None:
    """Write ``result`` atomically (temp file in the same folder, then os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=1))


IMPL_ORDER = ("normlab-numba", "normlab-numpy", "textbook", "torch")


def table(result: dict):
    """The result as a rich Table: one row per case and mode, ms (GB/s) per implementation."""
    from rich.table import Table

    impls = [i for i in IMPL_ORDER if any(r["impl"] == i for r in result["rows"])]
    t = Table(title=f"normlab bench (float32, median of {result['repeats']}, interleaved; "
                    f"copy {result['copy_gbps']:.1f} GB/s; torch threads "
                    f"{result['machine']['torch_threads']})")
    for col in ("case", "shape", "mode", *[f"{i} ms (GB/s)" for i in impls],
                "numba/torch", "numba % copy"):
        t.add_column(col, justify="left" if col in ("case", "shape", "mode") else "right")
    groups: dict[tuple, dict[str, dict]] = {}
    for r in result["rows"]:
        groups.setdefault((r["case"], tuple(r["shape"]), r["mode"]), {})[r["impl"]] = r
    for (case, shape, mode), by_impl in groups.items():
        cells = []
        for i in impls:
            r = by_impl.get(i)
            cells.append("-" if r is None else f"{r['median_s'] * 1e3:.3f} ({r['gbps']:.1f})")
        fast = by_impl.get("normlab-numba") or by_impl["normlab-numpy"]
        speed = fast["speedup_vs_torch"]
        t.add_row(case, "x".join(map(str, shape)), LABELS[mode],
                  *cells, "-" if speed is None else f"{speed:.2f}x",
                  f"{100 * fast['copy_fraction']:.0f}%")
    return t


def mlp_line(result: dict) -> str:
    mlp = result["mlp"]
    if "skipped" in mlp:
        return f"paper MLP: skipped ({mlp['skipped']})"
    line = f"paper MLP (784-100-100-100-10, BN, sigmoid, batch 60): numpy engine " \
           f"{mlp['numpy_steps_per_s']:.0f} steps/s"
    if "torch_steps_per_s" in mlp:
        line += f", torch eager {mlp['torch_steps_per_s']:.0f} steps/s, ratio {mlp['ratio']:.2f}x"
    return line


def models_table(result: dict):
    """The model rows as a rich Table: steps/s per engine, ratio, NumPy time per layer type."""
    from rich.table import Table

    t = Table(title="experiments' models, training steps/s (one thread each, median of rounds)")
    for col in ("model", "numpy engine", "torch eager", "numpy/torch", "numpy time by layer"):
        t.add_column(col, justify="left" if col in ("model", "numpy time by layer") else "right")
    for row in result["models"].get("rows", []):
        t.add_row(row["model"], f"{row['numpy_steps_per_s']:.0f}",
                  f"{row['torch_steps_per_s']:.0f}", f"{row['ratio']:.2f}x", _shares(row))
    return t


def _shares(row: dict) -> str:
    return ", ".join(f"{k} {100 * v:.0f}%" for k, v in row["shares"].items() if v >= 0.005)


def models_markdown(result: dict) -> str:
    """The model rows as GitHub markdown (for the README)."""
    lines = ["| model | NumPy engine | torch eager | NumPy / torch | NumPy time by layer type |",
             "|---|---|---|---|---|"]
    for row in result["models"].get("rows", []):
        lines.append(f"| {row['model']} | {row['numpy_steps_per_s']:.0f} steps/s | "
                     f"{row['torch_steps_per_s']:.0f} steps/s | {row['ratio']:.2f}x | "
                     f"{_shares(row)} |")
    return "\n".join(lines)


def main(quick: bool = False, tiny: bool = False, json_path: Path | None = None) -> dict:
    """What ``normlab bench`` does: check the settings, run, print the table, write the JSON.

    ``--json`` and ``NORMLAB_OUTPUT_POOL`` are checked before anything is timed; a write that
    fails at the end anyway (disk full) raises ValueError after the table is printed. Lines
    holding user text (the path) are printed with ``markup=False``: rich would read a ``[/x]``
    in them as a closing tag and crash.
    """
    from rich.console import Console

    from .kernels.outputs import pool_budget

    if json_path is not None:
        json_path = check_json_path(json_path)
    pool_budget()
    console = Console()
    # Plain progress lines, no live spinner: a refresh thread competing for the GIL while the
    # kernels release it adds milliseconds to every timed call.
    result = run(quick=quick, tiny=tiny, progress=lambda s: console.print(f"timing {s}"))
    console.print(table(result))
    console.print(f"byte model: training fwd+bwd = {result['byte_model']['train']}; "
                  f"eval = {result['byte_model']['eval']}; copy = {result['byte_model']['copy']}")
    for note in sorted({r["note"] for r in result["rows"] if r["note"]}):
        console.print(f"note: {note}")
    console.print(mlp_line(result))
    models = result.get("models", {"skipped": "not run"})
    if "skipped" in models:
        console.print(f"models: skipped ({models['skipped']})", markup=False)
    else:
        console.print(models_table(result))
    if json_path is not None:
        try:
            write_json(result, json_path)
        except OSError as exc:
            raise ValueError(f"--json: could not write {str(json_path)!r} "
                             f"({exc.strerror or exc}); the timings above were not saved"
                             ) from exc
        console.print(f"wrote {json_path}", markup=False, highlight=False)
    return result


def markdown(result: dict) -> str:
    """The table as GitHub markdown (for the README): ms and GB/s per implementation."""
    impls = [i for i in IMPL_ORDER if any(r["impl"] == i for r in result["rows"])]
    head = ["case", "shape", "pass", *impls, "numba vs torch", "numba % of copy BW"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    groups: dict[tuple, dict[str, dict]] = {}
    for r in result["rows"]:
        groups.setdefault((r["case"], tuple(r["shape"]), r["mode"]), {})[r["impl"]] = r
    for (case, shape, mode), by_impl in groups.items():
        cells = [f"{by_impl[i]['median_s'] * 1e3:.3f} ms ({by_impl[i]['gbps']:.1f} GB/s)"
                 if i in by_impl else "-" for i in impls]
        fast = by_impl.get("normlab-numba") or by_impl["normlab-numpy"]
        speed = fast["speedup_vs_torch"]
        lines.append("| " + " | ".join([case, "x".join(map(str, shape)),
                                        LABELS[mode], *cells,
                                        "-" if speed is None else f"{speed:.2f}x",
                                        f"{100 * fast['copy_fraction']:.0f}%"]) + " |")
    return "\n".join(lines)
