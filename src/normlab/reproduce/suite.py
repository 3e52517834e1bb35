"""``normlab reproduce``: run experiments over seeds resumably, then write results, CSVs,
figures and the report.

Work is split into units, one per (experiment, seed, run). Every unit's result is checkpointed
(``OUT/checkpoints/<experiment>/seed<k>/<run>.done``) with the hash of its full configuration
(experiment, run config, data fingerprint, engine, seed, size); long runs also leave
``<run>.partial`` checkpoints (model, optimizer, metrics so far). Re-running the same command
skips finished units and continues partial ones; a checkpoint of another configuration is
ignored, a corrupted one (checksum) is redone with a warning. Mini-batches and initial weights
are pure functions of the seed, so a resumed reproduction produces exactly the metrics of an
uninterrupted one, whatever the number of worker processes (``--jobs``) that ran the units.

Experiments already in ``OUT/results.json`` from a run with the same settings (data, engine,
seeds, size) are kept when others are (re)run into the same folder; a folder holds one run at a
time (:func:`out_lock`).
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import platform
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .. import __version__
from .._io import (
    UnsafePath,
    atomic_write_bytes,
    atomic_write_text,
    is_regular,
    kind,
    open_regular,
    read_regular,
    safe_dir,
)
from ..data import Dataset
from ..experiments import registry
from ..runner.base import Run, size_of
from ..runner.design import CONFIRMATORY_RULE
from ..runner.evidence import COMBINATION_RULE, METHOD
from ..runner.store import to_json
from .ledger import ledger_rows
from .options import Options, UsageError
from .pool import Events, run_units
from .reference import compare as compare_with_reference
from .units import Unit, plan

# Settings that must match for experiments of an earlier run in the same --out to be kept.
COMPATIBLE = ("size", "data", "engine", "seeds", "steps_scale", "device", "workers", "sync_bn")


# The files and folders normlab writes at the top of OUT (besides one folder per experiment)
OWN_FILES = ("results.json", "report.html", ".normlab.lock")
OWN_FOLDERS = ("checkpoints",)


def check_out_dir(out: Path, name: str = "--out") -> None:
    """Create ``out`` and prove it is writable, before any work starts; refuse a folder whose
    normlab files or folders (:func:`own_entries`) are links or special files, which a later
    write would otherwise follow out of ``out``."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        # a new, uniquely named file: never an existing file or link (O_EXCL)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".normlab-write-test."):
            pass
    except OSError as exc:
        raise UsageError(f"{name}: cannot write to {str(out)!r} ({exc.strerror or exc})") from None
    for path, mode, want in own_entries(out):
        if not want(mode):
            raise UsageError(f"{name}: expected normlab's files in {str(out)!r} to be regular "
                             f"files and folders (normlab never follows a link out of it), "
                             f"got {str(path)!r}, which is {kind(mode)}")


def own_entries(out: Path) -> Iterator[tuple[Path, int, Callable[[int], bool]]]:
    """(path, lstat mode, the test its mode must pass) of every entry that exists among those
    normlab writes in ``out``: the files of :data:`OWN_FILES`, and the folders of
    :data:`OWN_FOLDERS` and of the experiments with everything inside them (links are
    reported, never followed)."""
    def any_own(mode: int) -> bool:
        return stat.S_ISREG(mode) or stat.S_ISDIR(mode)

    tops = [(f, stat.S_ISREG) for f in OWN_FILES] + [
        (d, stat.S_ISDIR) for d in (*OWN_FOLDERS, *registry.EXPERIMENTS)]
    for top, want in tops:
        path = out / top
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue
        yield path, mode, want
        if stat.S_ISDIR(mode):
            for root, dirs, files in os.walk(path, followlinks=False):
                for entry in dirs + files:
                    sub = Path(root) / entry
                    yield sub, os.lstat(sub).st_mode, any_own


@contextmanager
def out_lock(out: Path, name: str = "--out") -> Iterator[None]:
    """Hold ``OUT/.normlab.lock`` for the whole run: a second run into the same folder is
    refused at once instead of silently overwriting the first one's results. The lock file
    is opened without following a link (a ``.normlab.lock -> victim`` link would have had
    the victim overwritten with ``pid N``)."""
    path = out / ".normlab.lock"
    try:
        fd = open_regular(path, name, os.O_RDWR, create=True)
    except OSError as exc:
        raise UsageError(f"{name}: cannot write {str(path)!r} ({exc.strerror or exc})") from None
    except UnsafePath as exc:
        raise UsageError(str(exc)) from None
    try:   # the descriptor itself, unbuffered: a failed write is reported once, here
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
            raise UsageError(f"{name}: {str(out)!r} is in use by another normlab run "
                             f"({holder}); wait for it or choose another --out") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        except OSError as exc:   # disk full: one line, not a traceback
            raise UsageError(f"{name}: cannot write {str(path)!r} ({exc.strerror or exc})"
                             ) from None
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def environment(opts: Options | None = None) -> dict:
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
    if opts is not None and opts.engine == "torch":
        import torch

        env["torch"] = torch.__version__
        if opts.device is not None:   # what every torch process of the run applies
            from ..torch.device import deterministic, resolve_device

            env["torch settings"] = deterministic(resolve_device(opts.device))
    return env


def skeleton(opts: Options, data: Dataset) -> dict:
    """results.json without any experiment yet."""
    return {"normlab": __version__,
            "config": {"experiments": opts.names, "quick": opts.size == "quick", "size": opts.size,
                       "data": opts.data_spec,
                       "engine": opts.engine, "seed": opts.seed, "seeds": opts.seed_list,
                       "jobs": opts.jobs, "steps_scale": opts.steps_scale, **opts.scale_out},
            "data": {"name": data.name, "description": data.describe(), "source": data.source,
                     "fingerprint": data.fingerprint},
            "environment": environment(opts), "intervals_method": METHOD,
            "experiments": {}, "timing": {}, "cpu_time": {}}


def previous_results(out: Path, results: dict) -> tuple[dict, str | None]:
    """Experiments of an earlier run in ``out`` that this run keeps, and a note for the user.

    Kept only when the earlier run had the same settings (:data:`COMPATIBLE`) and data;
    otherwise the note says what differs and that the earlier results will be replaced.
    """
    path = out / "results.json"
    if not is_regular(path):
        return {}, None
    try:
        old = json.loads(read_regular(path, "--out").decode("utf-8"))
        old_cfg, old_exps = old["config"], old["experiments"]
        same_data = old["data"]["fingerprint"] == results["data"]["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return {}, f"{str(path)!r} is not a normlab results file; it will be replaced"
    cfg = results["config"]
    old_cfg = {**old_cfg, "size": size_of(old_cfg)}
    differs = [k for k in COMPATIBLE if old_cfg.get(k) != cfg.get(k)]
    if not same_data:
        differs.append("data fingerprint")
    others = [n for n in old_exps if n not in cfg["experiments"]]
    if not others:
        return {}, None
    if differs:
        return {}, (f"{str(path)!r} holds {', '.join(others)} from a run with other settings "
                    f"({', '.join(differs)}); they will be dropped from the new results")
    kept = {n: old_exps[n] for n in others}
    timing = {n: old.get("timing", {}).get(n) for n in others}
    cpu = {n: old.get("cpu_time", {}).get(n) for n in others}
    return {"experiments": kept, "timing": timing, "cpu_time": cpu}, None


# the text fields of a results.json experiment that the report, the summary table and the
# Markdown print; each must be a string (a number there crashed the summary after the files
# were written)
TEXT_FIELDS = ("title", "source", "claim", "setup")


def check_results(results, name: str = "DIR") -> None:
    """Refuse, before anything is written, a results.json whose structure the report cannot
    use: ``ValueError`` naming the field, what was expected and what was found."""
    def need(ok: bool, where: str, want: str, got) -> None:
        if not ok:
            raise ValueError(f"{name}: expected {where} in results.json to be {want}, got "
                             f"{type(got).__name__} {str(got)[:60]!r}")

    need(isinstance(results, dict), "the top level", "an object", results)
    for key in ("config", "data", "environment"):
        need(isinstance(results.get(key), dict), key, "an object", results.get(key))
    exps = results.get("experiments")
    need(isinstance(exps, dict), "experiments", "an object", exps)
    need(isinstance(results["data"].get("description"), str), "data.description", "a string",
         results["data"].get("description"))
    for exp_name, entry in exps.items():
        need(exp_name in registry.EXPERIMENTS, f"the experiment name {exp_name[:60]!r}",
             "one of normlab's experiments", exp_name)
        need(isinstance(entry, dict), f"experiments[{exp_name!r}]", "an object", entry)
        for field in TEXT_FIELDS:
            need(isinstance(entry.get(field), str), f"experiments[{exp_name!r}].{field}",
                 "a string", entry.get(field))
        need(isinstance(entry.get("runs"), dict), f"experiments[{exp_name!r}].runs",
             "an object", entry.get("runs"))


def run_all(opts: Options, data: Dataset, events=None, warn=print,
            units: list[Unit] | None = None) -> dict:
    """Run (or resume) every unit (``units``: :func:`~.units.plan`'s, made here when not
    given); returns the results dict (written by :func:`finalize`)."""
    events = events or Events()
    results = skeleton(opts, data)
    units = plan(opts, data) if units is None else units
    t0 = time.perf_counter()
    done = run_units(units, opts, data, events, warn)
    for name in opts.names:
        mine = [u for u in units if u.experiment == name]
        exp, scale = mine[0].exp, mine[0].scale
        runs = [u.run for u in mine if u.seed == opts.seed]   # seeds are interleaved by run
        results["experiments"][name] = {
            "title": exp.title, "source": exp.source, "claim": exp.claim,
            "setup": exp.setup_text(data, scale, opts.size), "scale": scale, "size": opts.size,
            "seeds": opts.seed_list, "scale_note": exp.scale_note(data, scale, opts.size),
            "published": [p.to_json() for p in exp.published],
            "runs": {r.key: {"label": r.label, "config": r.config,
                             "metrics": {str(s): done[(name, s, r.key)][0]
                                         for s in opts.seed_list}} for r in runs}}
        results["timing"][name] = round(sum(done[u.id][1] for u in mine), 2)
        results["cpu_time"][name] = round(sum(done[u.id][2] for u in mine), 2)
    results["wall_time"] = round(time.perf_counter() - t0, 2)
    return results


def by_seed(entry: dict) -> tuple[list[Run], dict[int, dict]]:
    """(runs, seed -> run key -> metrics) of one experiment's results.json entry."""
    runs = [Run(k, v["config"], v.get("label", "")) for k, v in entry["runs"].items()]
    seeds = sorted({int(s) for v in entry["runs"].values() for s in v["metrics"]})
    return runs, {s: {k: v["metrics"][str(s)] for k, v in entry["runs"].items()} for s in seeds}


def finalize(out: Path, results: dict, keep: dict | None = None) -> Path:
    """Summaries, verdicts, metrics.csv, figures (PNG+SVG), results.json and report.html.

    Everything is derived from the run metrics in ``results``, so ``normlab report DIR`` can
    rebuild it all from ``results.json``. ``keep`` (from :func:`previous_results`) adds the
    experiments of an earlier compatible run in the same folder.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..report.html import write_report

    if keep:
        results["experiments"] = {**keep["experiments"], **results["experiments"]}
        for k in ("timing", "cpu_time"):
            results[k] = {**keep[k], **results.get(k, {})}
    files = {}   # everything is computed before anything is written (bad input loses nothing)
    for name, entry in results["experiments"].items():
        exp = registry.get(name)
        runs, metrics = by_seed(entry)
        summary = exp.summarize(runs, metrics)
        files[name, "metrics.csv"] = _csv_text(summary.rows).encode("utf-8")
        figures = []
        with matplotlib.rc_context({"svg.hashsalt": "normlab"}):   # stable SVG element ids
            for fig_name, fig in exp.figures(runs, metrics, summary).items():
                for ext in ("png", "svg"):
                    buf = io.BytesIO()
                    fig.savefig(buf, format=ext, dpi=110, metadata=_fig_metadata(ext))
                    files[name, f"{fig_name}.{ext}"] = buf.getvalue()
                plt.close(fig)
                figures.append(f"{name}/{fig_name}.png")
        entry.update({"measured": summary.measured, "verdict": summary.verdict,
                      "reason": summary.reason, "thresholds": summary.thresholds,
                      "intervals": {k: iv.to_json() for k, iv in summary.intervals.items()},
                      "criteria": [j.to_json() for j in summary.judged],
                      "published": [p.to_json() for p in exp.published],
                      "pilot_seeds": exp.pilot_seeds, "resolution": exp.resolution,
                      "design_changes": [d.to_json() for d in exp.design_changes],
                      "figures": figures, "csv": f"{name}/metrics.csv"})
    results.update({"intervals_method": METHOD, "combination_rule": COMBINATION_RULE,
                    "confirmatory_rule": CONFIRMATORY_RULE, "ledger": ledger_rows(results)})
    results["reproduction"] = compare_with_reference(results)
    text = to_json(results)
    for (folder, file), data in files.items():
        atomic_write_bytes(safe_dir(out, folder) / file, data, "--out")
    atomic_write_text(out / "results.json", text, "--out")
    return write_report(out, results)


def _fig_metadata(ext: str) -> dict:
    # No creation dates: the same results give byte-identical figures.
    return {"Date": None} if ext == "svg" else {"Software": None}


def _csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    if rows:
        fields = list(dict.fromkeys(k for r in rows for k in r))
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (float(v) if hasattr(v, "dtype") else v) for k, v in row.items()})
    return buf.getvalue()
