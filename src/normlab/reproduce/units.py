"""The units of a reproduction, one per (experiment, seed, run): how they are planned from the
:class:`~.options.Options` (each experiment resolved and its runs computed once) and how one is
run or read back from its checkpoint (:func:`run_unit`, what a worker process executes)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from .._io import is_regular, safe_dir
from ..data import Dataset
from ..experiments import registry
from ..runner.base import Experiment, Run, RunContext
from ..runner.store import CorruptCheckpoint, config_hash, read_checkpoint, write_checkpoint
from .options import Options


@dataclass(frozen=True)
class Unit:
    """One run of one experiment at one seed: what a worker process executes."""

    exp: Experiment
    seed: int
    run: Run
    scale: float

    @property
    def experiment(self) -> str:
        return self.exp.name

    @property
    def id(self) -> tuple[str, int, str]:
        return self.experiment, self.seed, self.run.key

    @property
    def label(self) -> str:
        return f"{self.experiment} s{self.seed} {self.run.label or self.run.key}"


def experiment_scale(exp: Experiment, opts: Options) -> float:
    """The step multiplier of ``exp``: its ``quick_scale`` at quick size (full and paper: 1),
    times ``--steps-scale``. What else paper changes, the experiment's ``runs`` decides."""
    return (exp.quick_scale if opts.size == "quick" else 1.0) * opts.steps_scale


def plan(opts: Options, data: Dataset) -> list[Unit]:
    """Every unit of the reproduction, experiment by experiment, seeds interleaved by run (so
    each experiment finishes as early as the workers allow)."""
    units = []
    for name in opts.names:
        exp = registry.get(name)
        scale = experiment_scale(exp, opts)
        for run in exp.runs(data, scale, opts.size):
            units += [Unit(exp, seed, run, scale) for seed in opts.seed_list]
    return units


def run_unit(unit: Unit, data: Dataset, opts: Options, progress=None,
             warn=print) -> tuple[dict, float, float]:
    """Run one unit, or read its finished checkpoint: (metrics, wall seconds, CPU seconds).

    The checkpoint (``OUT/checkpoints/<experiment>/seed<k>/<run>.done``) holds the hash of the
    unit's whole identity (experiment, run config, data fingerprint, engine, seed, scale, size):
    one of another identity is redone, a corrupted one is redone with a warning. The seconds
    are those of the attempt that finished the unit, kept in its checkpoint, so a resumed
    reproduction still reports what each finished unit cost (not the ~0 s of reading it back).
    A unit killed mid-run counts only the attempt that finished it.
    """
    exp, run = unit.exp, unit.run
    folder = safe_dir(opts.out, "checkpoints", exp.name, f"seed{unit.seed}")
    identity = {"experiment": exp.name, "run": run.key, "config": run.config,
                "data": [data.name, data.fingerprint], "engine": opts.engine,
                "seed": unit.seed, "scale": unit.scale, "size": opts.size, **opts.scale_out}
    h = config_hash(identity)
    done_path = folder / f"{run.key}.done"
    if is_regular(done_path):
        try:
            meta, _ = read_checkpoint(done_path)
            if meta.get("config_hash") == h:
                if progress:
                    progress(1, 1)
                return meta["metrics"], meta.get("seconds", 0.0), meta.get("cpu_seconds", 0.0)
        except CorruptCheckpoint as exc:
            warn(f"warning: {exc}; redoing run {exp.name}/seed{unit.seed}/{run.key}")
    ctx = RunContext(exp.name, run.key, data, opts.engine, unit.seed, h,
                     partial_path=folder / f"{run.key}.partial", progress=progress,
                     warn=lambda m: warn(f"warning: {m}"), device=opts.device,
                     workers=opts.workers, sync_bn=opts.sync_bn)
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        metrics = exp.run(ctx, run.config)
    finally:
        ctx.close()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    write_checkpoint(done_path, {"config_hash": h, "identity": identity, "metrics": metrics,
                                 "seconds": seconds, "cpu_seconds": cpu})
    ctx.partial_path.unlink(missing_ok=True)
    return metrics, seconds, cpu
