"""``normlab reproduce``: run experiments resumably, then write results, CSVs, figures, report.

Resume: every run's result is checkpointed (``OUT/checkpoints/<experiment>/<run>.done``) with
the hash of its full configuration (experiment, run config, data fingerprint, engine, seed,
size); long runs also leave ``<run>.partial`` checkpoints (model, optimizer, metrics so far).
Re-running the same command skips finished runs and continues partial ones; a checkpoint of
another configuration is ignored, a corrupted one (checksum) is redone with a warning. Mini-
batches and initial weights are pure functions of the seed, so a resumed reproduction produces
exactly the metrics of an uninterrupted one.
"""

from __future__ import annotations

import csv
import io
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from ._io import atomic_write_bytes, atomic_write_text
from .data import Dataset
from .experiments import registry
from .experiments.base import Run, RunContext
from .experiments.store import (
    CorruptCheckpoint,
    config_hash,
    read_checkpoint,
    to_json,
    write_checkpoint,
)

CI_SCALE_ENV = "NORMLAB_CI_SCALE"


class UsageError(ValueError):
    """Bad command-line input: the CLI prints it on one line and exits with code 2."""


@dataclass
class Options:
    names: list[str]
    quick: bool
    data_spec: str
    engine: str
    out: Path
    seed: int
    steps_scale: float = 1.0


def resolve_scale(quick: bool, steps_scale: float | None) -> float:
    """The extra step multiplier: ``--steps-scale`` or ``NORMLAB_CI_SCALE`` (CI sizes)."""
    if steps_scale is None:
        raw = os.environ.get(CI_SCALE_ENV, "").strip()
        try:
            steps_scale = float(raw) if raw else 1.0
        except ValueError:
            raise UsageError(f"{CI_SCALE_ENV}: expected a number in (0, 1], got {raw!r}") from None
    if not 0 < steps_scale <= 1:
        raise UsageError(f"--steps-scale: expected a number in (0, 1], got {steps_scale}")
    return steps_scale


def check_out_dir(out: Path) -> None:
    """Create ``out`` and prove it is writable, before any work starts."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".normlab-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"--out: cannot write to {str(out)!r} ({exc.strerror or exc})") from None


def environment() -> dict:
    import numpy as np

    env = {"normlab": __version__, "python": platform.python_version(), "numpy": np.__version__,
           "platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
           "cpu_count": os.cpu_count(),
           "kernels": os.environ.get("NORMLAB_KERNELS", "auto")}
    try:
        import numba
        env["numba"] = numba.__version__
    except ImportError:
        pass
    return env


def experiment_scale(exp, opts: Options) -> float:
    return (exp.quick_scale if opts.quick else 1.0) * opts.steps_scale


def run_all(opts: Options, data: Dataset, *, on_start_experiment: Callable = None,
            on_start_run: Callable = None, on_end_run: Callable = None,
            on_progress: Callable = None,
            warn: Callable[[str], None] = print) -> dict:
    """Run (or resume) every run of every experiment; returns the results dict (also on disk)."""
    experiments = [registry.get(n) for n in opts.names]
    results = {"normlab": __version__,
               "config": {"experiments": opts.names, "quick": opts.quick, "data": opts.data_spec,
                          "engine": opts.engine, "seed": opts.seed,
                          "steps_scale": opts.steps_scale},
               "data": {"name": data.name, "description": data.describe(), "source": data.source,
                        "fingerprint": data.fingerprint},
               "environment": environment(), "experiments": {}, "timing": {}}
    for exp in experiments:
        scale = experiment_scale(exp, opts)
        runs = exp.runs(data, scale)
        if on_start_experiment:
            on_start_experiment(exp, runs)
        folder = opts.out / "checkpoints" / exp.name
        folder.mkdir(parents=True, exist_ok=True)
        metrics, t0 = {}, time.perf_counter()
        for run in runs:
            if on_start_run:
                on_start_run(exp, run)
            metrics[run.key] = _run_or_resume(exp, run, data, opts, scale, folder, on_progress,
                                              warn)
            if on_end_run:
                on_end_run(exp, run)
        results["experiments"][exp.name] = {
            "title": exp.title, "source": exp.source, "claim": exp.claim,
            "setup": exp.setup(data, scale), "scale": scale,
            "runs": {r.key: {"label": r.label, "config": r.config, "metrics": metrics[r.key]}
                     for r in runs}}
        results["timing"][exp.name] = round(time.perf_counter() - t0, 2)
    return results


def _run_or_resume(exp, run: Run, data: Dataset, opts: Options, scale: float, folder: Path,
                   on_progress, warn) -> dict:
    identity = {"experiment": exp.name, "run": run.key, "config": run.config,
                "data": [data.name, data.fingerprint], "engine": opts.engine, "seed": opts.seed,
                "scale": scale}
    h = config_hash(identity)
    done_path = folder / f"{run.key}.done"
    if done_path.is_file():
        try:
            meta, _ = read_checkpoint(done_path)
            if meta.get("config_hash") == h:
                if on_progress:
                    on_progress(1, 1)
                return meta["metrics"]
        except CorruptCheckpoint as exc:
            warn(f"warning: {exc}; redoing run {exp.name}/{run.key}")
    ctx = RunContext(exp.name, run.key, data, opts.engine, opts.seed, h,
                     partial_path=folder / f"{run.key}.partial", progress=on_progress,
                     warn=lambda m: warn(f"warning: {m}"))
    metrics = exp.run(ctx, run.config)
    write_checkpoint(done_path, {"config_hash": h, "identity": identity, "metrics": metrics})
    ctx.partial_path.unlink(missing_ok=True)
    return metrics


def finalize(out: Path, results: dict) -> Path:
    """Summaries, verdicts, metrics.csv, figures (PNG+SVG), results.json and report.html.

    Everything is derived from the run metrics in ``results``, so ``normlab report DIR`` can
    rebuild it all from ``results.json``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .report.html import write_report

    for name, entry in results["experiments"].items():
        exp = registry.get(name)
        runs = [Run(k, v["config"], v.get("label", "")) for k, v in entry["runs"].items()]
        metrics = {k: v["metrics"] for k, v in entry["runs"].items()}
        summary = exp.summarize(runs, metrics)
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        _write_csv(folder / "metrics.csv", summary.rows)
        figures = []
        for fig_name, fig in exp.figures(runs, metrics, summary).items():
            for ext in ("png", "svg"):
                buf = io.BytesIO()
                fig.savefig(buf, format=ext, dpi=110, metadata=_fig_metadata(ext))
                atomic_write_bytes(folder / f"{fig_name}.{ext}", buf.getvalue())
            plt.close(fig)
            figures.append(f"{name}/{fig_name}.png")
        entry.update({"measured": summary.measured, "verdict": summary.verdict,
                      "reason": summary.reason, "thresholds": summary.thresholds,
                      "figures": figures, "csv": f"{name}/metrics.csv"})
    atomic_write_text(out / "results.json", to_json(results))
    return write_report(out, results)


def _fig_metadata(ext: str) -> dict:
    # No creation dates: the same results give byte-identical figures.
    return {"Date": None} if ext == "svg" else {"Software": None}


def _write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (float(v) if hasattr(v, "dtype") else v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())
