"""The terminal side of ``normlab reproduce``, ``list`` and ``report``: validation (one-line
errors, exit code 2), rich progress bars with ETA, and the summary: one line per claim.

Only the program's own markup is rich markup: every piece of user or results text (paths,
names, claims, messages) goes through :func:`normlab._escape.markup` first, so a ``[/x]`` in an
argument prints as itself instead of crashing the console, and an ESC from a results file
prints as ``\x1b`` instead of reaching the terminal.
"""

from __future__ import annotations

import json
import os
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from .._escape import markup as escape
from .._escape import one_line
from .._io import UnsafePath, check_target, read_regular
from ..reproduce.options import DEFAULT_SEEDS, Options, UsageError, resolve_scale, resolve_size
from ..reproduce.pool import Events
from ..reproduce.suite import (
    check_out_dir,
    check_results,
    finalize,
    out_lock,
    own_entries,
    previous_results,
    run_all,
    skeleton,
)
from ..reproduce.units import Unit, plan
from .environment import check_environment

MAX_SEEDS = 100
# the files normlab writes in a results folder, by suffix: --markdown never replaces one
OWN_KINDS = (".json", ".html", ".csv", ".png", ".svg", ".done", ".partial", ".lock")
# The largest seed any unit may get (seed + seeds - 1): NumPy's SeedSequence and torch's
# manual_seed take it; 2**63 - 1 failed on the first unit.
MAX_SEED = 2**32 - 1
# --workers must split every experiment's batch evenly (32 images in batch-size, 60 elsewhere)
WORKER_BATCHES = (32, 60)


def _fail(message: str) -> None:
    Console(stderr=True).print(f"[red]error:[/red] {escape(one_line(message))}",
                               highlight=False, soft_wrap=True)
    raise SystemExit(2)


def as_path(value, name: str) -> Path:
    """A folder or file argument; ``""`` is refused (``Path("")`` is the current directory)."""
    if value is None or not str(value).strip():
        raise UsageError(f"{name}: expected a path, got {value!r}")
    return Path(value)


def _load_data(spec: str, data_dir: Path | None):
    from .. import data

    try:
        return data.load(spec, data_dir)
    except (FileNotFoundError, ValueError) as exc:
        msg = str(exc) if str(exc).startswith("data:") else f"data: {exc}"
        raise UsageError(f"--{msg}") from None


def default_jobs() -> int:
    """One worker per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:   # not Linux
        return max(1, os.cpu_count() or 1)


def _check_scale_out(engine: str, device: str | None, workers: int, sync_bn: bool) -> None:
    if engine != "torch":
        for flag, value, default in (("--device", device, None), ("--workers", workers, 1),
                                     ("--sync-bn", sync_bn, False)):
            if value != default:
                raise UsageError(f"{flag}: expected --engine torch (a torch-engine option), "
                                 f"got --engine {engine}")
        return
    if device is not None:
        from ..torch.device import resolve_device

        try:
            resolve_device(device)
        except (ValueError, TypeError) as exc:
            raise UsageError(str(exc)) from None
    if workers < 1 or any(b % workers for b in WORKER_BATCHES):
        raise UsageError(f"--workers: expected a number of processes that divides every "
                         f"experiment's batch {WORKER_BATCHES} (1, 2 or 4), got {workers}")
    if sync_bn and workers == 1:
        raise UsageError("--sync-bn: expected --workers 2 or 4 (one process already normalises "
                         "over the whole batch), got --workers 1")


def _check(names: list[str], engine: str, seed: int, seeds: int | None, jobs: int | None,
           size: str) -> tuple[list[str], int, int]:
    from ..engines import ENGINES
    from ..experiments import EXPERIMENTS

    names = list(names) or list(EXPERIMENTS)
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise UsageError(f"unknown experiment {', '.join(map(repr, unknown))}; expected one "
                         f"of {', '.join(EXPERIMENTS)} (see 'normlab list')")
    if len(set(names)) != len(names):
        raise UsageError(f"experiments: expected each name once, got {names}")
    if engine not in ENGINES:
        raise UsageError(f"--engine: expected numpy or torch, got {engine!r}")
    if seed < 0:
        raise UsageError(f"--seed: expected a non-negative integer, got {seed}")
    seeds = DEFAULT_SEEDS[size] if seeds is None else seeds
    if not 1 <= seeds <= MAX_SEEDS:
        raise UsageError(f"--seeds: expected a count from 1 to {MAX_SEEDS}, got {seeds}")
    if seed + seeds - 1 > MAX_SEED:
        raise UsageError(f"--seed: expected seed + seeds - 1 <= {MAX_SEED} (the last seed), "
                         f"got {seed} with --seeds {seeds}")
    jobs = default_jobs() if jobs is None else jobs
    if jobs < 1:
        raise UsageError(f"--jobs: expected a positive number of processes, got {jobs}")
    if engine == "torch":
        try:
            import torch
        except ImportError:
            raise UsageError("--engine torch: torch is not installed "
                             "(pip install 'normlab[torch]')") from None
        # The experiments' models are small: with torch's default thread pool a step took
        # 64 ms instead of 0.9 ms on a busy 2-core machine. One thread unless the user
        # chose a count through the standard variable.
        if "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(1)
    return names, seeds, jobs


class _Bars(Events):
    """One bar per experiment (units done) and one per unit while it runs."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.experiments: dict[str, int] = {}
        self.units: dict = {}
        self.finished: set = set()   # a worker's "started" message can arrive after its result

    def start(self, units):
        for name in dict.fromkeys(u.experiment for u in units):
            total = sum(u.experiment == name for u in units)
            self.experiments[name] = self.progress.add_task(
                f"[bold]{escape(name)}[/bold] runs", total=total)

    def unit_started(self, unit):
        if unit.id not in self.finished:
            self.units[unit.id] = self.progress.add_task(f"  {escape(unit.label)}", total=None)

    def unit_progress(self, unit, done, total):
        if unit.id in self.units:
            self.progress.update(self.units[unit.id], completed=done, total=total)

    def unit_finished(self, unit, seconds):
        self.finished.add(unit.id)
        task = self.units.pop(unit.id, None)
        if task is not None:
            self.progress.remove_task(task)
        self.progress.advance(self.experiments[unit.experiment])


def reproduce(*, names: list[str], quick: bool, size: str | None, data_spec: str,
              data_dir: Path | None, engine: str, out, seed: int, seeds: int | None,
              jobs: int | None, device: str | None, workers: int, sync_bn: bool,
              steps_scale: float | None) -> None:
    """``normlab reproduce``: the flags checked (one line, exit code 2), turned into one
    :class:`Options` and its units, then run."""
    console = Console(stderr=True, soft_wrap=True)
    try:
        out = as_path(out, "--out")
        try:
            check_environment()
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        size = resolve_size(quick, size)
        names, seeds, jobs = _check(names, engine, seed, seeds, jobs, size)
        _check_scale_out(engine, device, workers, sync_bn)
        steps_scale = resolve_scale(steps_scale)
        data = _load_data(data_spec, data_dir)
        settings = dict(names=names, size=size, data_spec=data_spec, engine=engine, out=out,
                        seed=seed, seeds=seeds, steps_scale=steps_scale, device=device,
                        workers=workers, sync_bn=sync_bn)
        # the units do not depend on jobs, which is capped at their number
        units = plan(Options(**settings), data)
        opts = Options(**settings, jobs=_cap_jobs(jobs, len(units), console))
        check_out_dir(out)
        with out_lock(out):
            _reproduce(opts, data, units, console)
    except (UsageError, UnsafePath) as exc:
        _fail(str(exc))
    except OSError as exc:   # disk full, permissions: finished runs are checkpointed
        _fail(f"--out: cannot write to {str(out)!r} ({exc.strerror or exc}); the finished "
              f"runs are checkpointed: fix that and re-run the same command to resume")


def _cap_jobs(jobs: int, units: int, console: Console) -> int:
    """``--jobs``, never above the number of units (a process per unit at most) and with a
    warning above the cores this process may use (processes then only share cores)."""
    cores = default_jobs()
    if jobs > cores:
        console.print(f"[yellow]warning: --jobs {jobs} is more than the {cores} cores this "
                      f"process may use; the runs will share them[/yellow]", highlight=False)
    return max(1, min(jobs, units))


def _reproduce(opts: Options, data, units: list[Unit], console: Console) -> None:
    keep, note = previous_results(opts.out, skeleton(opts, data))
    console.print(f"normlab reproduce: {escape(', '.join(opts.names))} on "
                  f"{escape(data.describe())}, engine {escape(opts.engine)}, seeds "
                  f"{opts.seed}..{opts.seed + opts.seeds - 1}, {opts.jobs} process"
                  f"{'es' if opts.jobs > 1 else ''}, {opts.size} size -> "
                  f"{escape(str(opts.out))}", highlight=False)
    if note:
        console.print(f"[yellow]note: {escape(note)}[/yellow]", highlight=False)
    if keep:
        console.print(f"keeping {escape(', '.join(keep['experiments']))} from the earlier run "
                      f"in this folder", highlight=False)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        try:
            results = run_all(opts, data, events=_Bars(progress), units=units,
                              warn=lambda m: progress.console.print(
                                  f"[yellow]{escape(m)}[/yellow]", highlight=False,
                                  soft_wrap=True))
        except KeyboardInterrupt:
            progress.stop()
            console.print("interrupted: re-run the same command to resume", highlight=False)
            raise SystemExit(130) from None
        except BrokenProcessPool:
            progress.stop()
            _fail("a worker process died (killed, or out of memory); the runs it finished are "
                  "checkpointed: re-run the same command to resume")
    report = finalize(opts.out, results, keep)
    _print_summary(results, Console())
    _print_report_path(report, Console())


def _print_summary(results: dict, console: Console) -> None:
    """The reproduction sentence and one line per claim, each within 80 columns
    (:func:`normlab.report.summary.summary_lines`); the details are in the report."""
    from ..report.summary import summary_lines

    for line in summary_lines(results):
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def _print_report_path(report: Path, console: Console) -> None:
    """``Report: PATH``; a path too long for 80 columns goes on its own line (unbroken, so
    it can still be copied)."""
    path = escape(str(report.resolve()))
    line = f"Report: {path}"
    console.print(line if len(line) <= 80 else f"Report:\n{path}", highlight=False,
                  soft_wrap=True)


def list_experiments() -> None:
    from ..experiments import EXPERIMENTS

    table = Table(title="normlab experiments")
    table.add_column("name", no_wrap=True)
    table.add_column("source")
    table.add_column("claim")
    for e in EXPERIMENTS.values():
        table.add_row(escape(e.name), escape(e.source), escape(e.claim))
    Console().print(table)


def rebuild_report(out, markdown=None) -> None:
    """``normlab report DIR [--markdown FILE]``: everything is checked (results.json read
    without following a link, its structure, FILE not one of DIR's own files nor a link or a
    special file) before anything is written."""
    from .._io import atomic_write_text
    from ..report.markdown import render

    try:
        out = as_path(out, "DIR")
        markdown = None if markdown is None else as_path(markdown, "--markdown")
    except UsageError as exc:
        _fail(str(exc))
    path = out / "results.json"
    try:
        results = json.loads(read_regular(path, "DIR").decode("utf-8"))
        check_results(results)
    except FileNotFoundError:
        _fail(f"DIR: no results.json in {str(out)!r} (run 'normlab reproduce --out DIR' first)")
    except UnsafePath as exc:
        _fail(str(exc))
    except (OSError, ValueError, AttributeError, RecursionError) as exc:
        # RecursionError: JSON nested 100,000 deep
        _fail(f"DIR: {str(path)!r} is not a normlab results file "
              f"({type(exc).__name__}: {str(exc)[:200]})")
    try:
        if markdown is not None:
            own = [(out / name, f"DIR/{name}") for name in ("results.json", "report.html")]
            own += [(p, repr(str(p))) for p, _, _ in own_entries(out) if p.suffix in OWN_KINDS]
            check_target(markdown, "--markdown", protect=own)
        check_out_dir(out, "DIR")
        with out_lock(out, "DIR"):
            report = finalize(out, results)
            text = None if markdown is None else render(results)
            if markdown is not None:
                atomic_write_text(markdown, text, "--markdown", protect=own)
    except (UsageError, UnsafePath) as exc:
        _fail(str(exc))
    except OSError as exc:   # disk full (the lock, a figure, the Markdown)
        _fail(f"DIR: cannot write the report ({exc.strerror or exc}); results.json is kept")
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        _fail(f"DIR: {str(path)!r} is not a complete normlab results file "
              f"({type(exc).__name__}: {exc})")
    _print_summary(results, Console())
    _print_report_path(report, Console())
