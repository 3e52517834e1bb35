"""The experiment API: what one reproduction of a published claim consists of.

An :class:`Experiment` names the claim and its source, splits its work into independent
:class:`Run` units (each checkpointed on its own, so a killed reproduction resumes run by run),
runs one unit for one seed (``run(ctx, config) -> metrics``), reduces the runs of one seed to
named statistics (``statistics``), and declares, before any run, the :class:`Criterion` bars
those statistics are judged against and the numbers its sources publish. :meth:`summarize` is the
same for every experiment: a 95% interval per statistic over the seeds, one verdict per criterion
and one combination rule (:mod:`.evidence`). Adding an experiment = one file with a subclass +
one registry entry (:mod:`normlab.experiments.registry`).

Sizes (:data:`SIZES`): ``quick`` (the step counts times ``quick_scale``), ``full`` (what two CPU
cores run in minutes) and ``paper`` (the closest setting to the source that one GPU runs in
about an hour for the whole suite). ``setup``, ``runs`` and ``scale_note`` take the size; an
experiment whose full size already is its source's setting runs it unchanged at ``paper`` and
says why in ``same_at_paper`` (:meth:`Experiment.setup_text` adds it to the setup).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._io import is_regular
from ..data import Dataset
from ..engines import make_trainer
from ..engines.spec import Spec
from .design import CONFIRMATORY_RULE, DesignChange
from .evidence import (
    COMBINATION_RULE,
    METHOD,
    VERDICTS,
    Criterion,
    Interval,
    Judged,
    Published,
    combine,
    interval,
    judge,
)
from .store import CorruptCheckpoint, read_checkpoint, write_checkpoint
from .testnoise import replicates

SIZES = ("quick", "full", "paper")


def size_of(config: dict) -> str:
    """The size of a results.json ``config`` (one written before sizes: from ``quick``)."""
    return config.get("size") or ("quick" if config.get("quick") else "full")


Metrics = dict[str, dict]            # run key -> that run's metrics, for one seed
BySeed = dict[int, Metrics]          # seed -> the metrics of every run at that seed


@dataclass(frozen=True)
class Run:
    """One independent unit of work: a key unique within the experiment and a JSON-able config."""

    key: str
    config: dict
    label: str = ""


@dataclass
class Summary:
    """What an experiment concluded from its runs' metrics over all seeds."""

    measured: dict            # name -> number or text, shown in the report's table
    verdict: str              # one of VERDICTS
    reason: str               # how the verdict follows from the measured numbers
    thresholds: str           # the rule, stated before looking at any result
    rows: list[dict] = field(default_factory=list)   # metrics.csv
    intervals: dict[str, Interval] = field(default_factory=dict)
    judged: list[Judged] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict: expected one of {VERDICTS}, got {self.verdict!r}")


class Experiment:
    """Base class; subclasses set the class attributes and implement the methods below."""

    name: str = ""
    title: str = ""
    source: str = ""          # paper + section / textbook + figure
    claim: str = ""           # the published claim, in words
    quick_scale: float = 0.1  # --quick multiplies step counts by this (the method is unchanged)
    criteria: tuple[Criterion, ...] = ()     # the bars, fixed before any run
    published: tuple[Published, ...] = ()    # what the sources report
    definitions: str = ""     # what the statistics mean, for the report's rule paragraph
    same_at_paper: str = ""   # why --size paper runs the full setting unchanged (if it does)
    pilot_seeds: str = ""     # the seeds (and data, size) the design was piloted on
    design_changes: tuple[DesignChange, ...] = ()   # changes made after seeing a result
    resolution: str = ""      # how often the curves are evaluated, where steps are read off

    def setup(self, data: Dataset, scale: float, size: str = "full") -> str:
        """The exact setup as prose for the report (architecture, optimizer, steps, init)."""
        raise NotImplementedError

    def setup_text(self, data: Dataset, scale: float, size: str = "full") -> str:
        """:meth:`setup`, plus at ``paper`` size why it is the full setting (if it is)."""
        text = self.setup(data, scale, size)
        if size == "paper" and self.same_at_paper:
            text += f" --size paper runs this full setting unchanged: {self.same_at_paper}"
        return text

    def runs(self, data: Dataset, scale: float, size: str = "full") -> list[Run]:
        raise NotImplementedError

    def run(self, ctx: RunContext, config: dict) -> dict:
        """Do one run; return its metrics (JSON-able)."""
        raise NotImplementedError

    def statistics(self, runs: list[Run], metrics: Metrics) -> dict[str, float]:
        """The numbers of one seed that the criteria read (and others worth an interval)."""
        raise NotImplementedError

    def scale_note(self, data: Dataset, scale: float, size: str = "full") -> str:
        """Our scale in a few words (model, steps, training images) for the published table."""
        return ""

    def rows(self, runs: list[Run], metrics: Metrics) -> list[dict]:
        """metrics.csv rows of one seed (a ``seed`` column is added in front)."""
        return []

    def describe(self, runs: list[Run], by_seed: BySeed) -> dict:
        """Extra report rows (name -> text) beside the statistics' intervals."""
        return {}

    def figures(self, runs: list[Run], by_seed: BySeed, summary: Summary) -> dict:
        """name -> matplotlib Figure (saved as name.png and name.svg)."""
        raise NotImplementedError

    def summarize(self, runs: list[Run], by_seed: BySeed) -> Summary:
        """Intervals over seeds, one verdict per criterion, the one combination rule."""
        if not by_seed:
            raise ValueError(f"{self.name}: expected the metrics of at least one seed, got none")
        seeds = sorted(by_seed)
        stats = {s: self.statistics(runs, by_seed[s]) for s in seeds}
        reps = replicates({s: by_seed[s] for s in seeds}, lambda m: self.statistics(runs, m))
        log = {c.statistic for c in self.criteria if c.log}
        intervals = {}
        for k in stats[seeds[0]]:
            values = [stats[s][k] for s in seeds]
            test = None if reps is None else [[r[s][k] for s in seeds] for r in reps]
            if test is not None and all(row == values for row in test):
                test = None    # this statistic does not read test accuracy
            intervals[k] = interval(values, log=k in log, test=test)
        missing = [c.statistic for c in self.criteria if c.statistic not in intervals]
        if missing:
            raise ValueError(f"{self.name}: criteria read statistics {missing} that "
                             f"statistics() does not return")
        judged = judge(self.criteria, [intervals[c.statistic] for c in self.criteria])
        verdict = combine(judged)
        measured = {k: iv.text() for k, iv in intervals.items()}
        measured.update(self.describe(runs, by_seed))
        thresholds = " ".join(filter(None, [
            self.definitions, self.resolution, "Bars, fixed before any run: "
            + "; ".join(c.rule() for c in self.criteria) + ".", COMBINATION_RULE,
            f"Intervals: {METHOD}.", CONFIRMATORY_RULE]))
        rows = [{"seed": s, **r} for s in seeds for r in self.rows(runs, by_seed[s])]
        evidence = [j.text() for j in judged if j.criterion.role == "evidence"]
        shown = [j.text() for j in judged if j.criterion.role == "demonstration"]
        reason = "; ".join(evidence) + (
            ("; " if evidence else "") + "demonstrations (cannot fail by construction, never "
            "make the claim hold): " + "; ".join(shown) if shown else "")
        return Summary(measured, verdict, reason, thresholds, rows, intervals, judged)


def scaled(n: int, scale: float, minimum: int = 1) -> int:
    """``n`` shrunk by ``scale`` (quick and CI sizes), never below ``minimum``."""
    return max(int(minimum), int(round(n * scale)))


def derive_seed(seed: int, *names) -> np.random.SeedSequence:
    """A SeedSequence for (seed, names...): runs that share names share their random draws."""
    words = [int(seed)] + [zlib.crc32(str(n).encode()) for n in names]
    return np.random.SeedSequence(words)


@dataclass
class RunContext:
    """What a run gets from the runner: data, engine, seed, progress and mid-run checkpoints."""

    experiment: str
    key: str
    data: Dataset
    engine: str
    seed: int
    config_hash: str
    partial_path: Path | None = None
    progress: Callable[[int, int], None] | None = None   # (steps done, steps total)
    warn: Callable[[str], None] | None = None
    device: str | None = None       # torch engine: where to train (None: CPU, defaults kept)
    workers: int = 1                # torch engine: DistributedDataParallel processes
    sync_bn: bool = False           # torch engine, workers > 1: global BN statistics

    _open: list = field(default_factory=list)

    def owned(self, trainer):
        """``trainer``, closed by the runner when the run ends (worker processes, if any)."""
        self._open.append(trainer)
        return trainer

    def close(self) -> None:
        while self._open:
            self._open.pop().close()

    def trainer(self, spec: Spec, init_std: float | str, rng: np.random.Generator, lr: float,
                distributed: bool = True, split: bool = True):
        """A trainer of ``spec`` on this run's engine and device, closed when the run ends.

        ``init_std``: the Linear weights' std, or "he" (see :func:`normlab.engines.make_trainer`).
        An experiment that reaches into its model (``distributed=False``) trains in one
        process, with a note when workers were asked for. ``split=False``: this run does not
        split its batch over ``--workers`` (it computes the same thing in one process).
        """
        if distributed and split:
            options = {"workers": self.workers, "sync_bn": self.sync_bn}
        elif distributed:
            options = {}
        else:
            if self.workers > 1 and self.warn:
                self.warn(f"{self.experiment}/{self.key}: reaches into its model, so it trains "
                          f"in one process; --workers {self.workers} ignored here")
            options = {"distributed": False}
        return self.owned(make_trainer(self.engine, spec, init_std, rng, lr, device=self.device,
                                       **options))

    def numpy_only(self, why: str) -> None:
        """Note that this run measures NumPy-engine layers whatever ``--engine`` says (``why``:
        what has no torch twin, e.g. a table of normlab's own layers that trains nothing)."""
        # the one comparison with the engine's name outside make_trainer: a run that builds no
        # trainer cannot let the trainer stand for the engine
        if self.engine != "numpy" and self.warn:
            self.warn(f"{self.experiment}/{self.key}: runs on the NumPy engine ({why}); "
                      f"--engine {self.engine} ignored")

    def rng(self, *names) -> np.random.Generator:
        """A Generator determined by the seed, the experiment and ``names`` only."""
        return np.random.default_rng(derive_seed(self.seed, self.experiment, *names))

    def report(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(done, total)

    def save_partial(self, meta: dict, arrays: dict) -> None:
        """Checkpoint a run in progress (model, optimizer, metrics so far, step)."""
        if self.partial_path is not None:
            write_checkpoint(self.partial_path, {"config_hash": self.config_hash, **meta}, arrays)

    def load_partial(self) -> tuple[dict, dict] | None:
        """The last mid-run checkpoint of this exact config, or None."""
        path = self.partial_path
        if path is None or not is_regular(path):   # a link is not followed
            return None
        try:
            meta, arrays = read_checkpoint(path)
        except CorruptCheckpoint as exc:
            if self.warn:
                self.warn(f"{exc}; restarting run {self.experiment}/{self.key} from scratch")
            return None
        if meta.get("config_hash") != self.config_hash:
            return None
        return meta, arrays
