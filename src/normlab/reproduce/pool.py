"""Running the units of a reproduction: in this process, or in ``--jobs`` worker processes.

Units are independent (each one is a pure function of its config and seed, and checkpoints
itself), so they can run in any order on any number of processes. Workers are started with
``spawn`` (numba's and OpenMP's thread pools do not survive ``fork``) with one BLAS / numba /
torch thread each: the models are small, and two workers on two cores beat one worker with two
threads. Progress and warnings travel back to this process through a queue, where
:class:`Events` (the CLI's progress bars) sees them exactly as in a sequential run.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_mod
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager

from .._orphans import exit_with_parent
from ..data import Dataset
from .options import Options
from .units import Unit, run_unit

ONE_THREAD = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


class Events:
    """Callbacks of a reproduction in progress; the default does nothing."""

    def start(self, units: list[Unit]) -> None: ...

    def unit_started(self, unit: Unit) -> None: ...

    def unit_progress(self, unit: Unit, done: int, total: int) -> None: ...

    def unit_finished(self, unit: Unit, seconds: float) -> None: ...


# (experiment, seed, run) -> (metrics, wall seconds, CPU seconds of the process that ran it)
Done = dict[tuple[str, int, str], tuple[dict, float, float]]


def run_units(units: list[Unit], opts: Options, data: Dataset, events: Events,
              warn: Callable[[str], None]) -> Done:
    """Run every unit (``opts.jobs`` processes); returns their metrics and seconds."""
    events.start(units)
    if opts.jobs <= 1 or len(units) <= 1:
        return _sequential(units, opts, data, events, warn)
    return _parallel(units, opts, data, events, warn)


def _sequential(units, opts, data, events, warn) -> Done:
    done = {}
    for unit in units:
        events.unit_started(unit)
        done[unit.id] = run_unit(unit, data, opts,
                                 progress=lambda d, t, u=unit: events.unit_progress(u, d, t),
                                 warn=warn)
        events.unit_finished(unit, done[unit.id][1])
    return done


@contextmanager
def _one_thread_children() -> Iterator[None]:
    """Environment inherited by the spawned workers: one thread per library, unless the user
    set a count."""
    added = [k for k in ONE_THREAD if k not in os.environ]
    for k in added:
        os.environ[k] = "1"
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


_WORKER: dict = {}


def _init_worker(datasets, messages, engine: str, parent_pid: int) -> None:
    exit_with_parent(parent_pid)   # kill -9 of the CLI alone must not leave workers computing
    _WORKER.update(data=datasets.get(), messages=messages)
    if engine == "torch":
        import torch

        if "OMP_NUM_THREADS" not in os.environ or os.environ["OMP_NUM_THREADS"] == "1":
            torch.set_num_threads(1)


def _work(index: int, unit: Unit, opts: Options) -> tuple[int, tuple[dict, float, float]]:
    messages = _WORKER["messages"]
    messages.put(("start", index))
    return index, run_unit(unit, _WORKER["data"], opts,
                           progress=lambda d, t: messages.put(("progress", index, d, t)),
                           warn=lambda m: messages.put(("warn", m)))


def _parallel(units, opts, data, events, warn) -> Done:
    ctx = multiprocessing.get_context("spawn")
    messages, datasets = ctx.Queue(), ctx.Queue()
    workers = min(opts.jobs, len(units))
    # The dataset reaches each worker through a queue, whose feeder thread writes it while the
    # workers start: as an initializer argument it is part of what starting a worker writes
    # into its pipe, and that write (15 MB for mnist5k) blocks this process until the worker
    # has started Python and reads it, so the workers would start one after the other.
    for _ in range(workers):
        datasets.put(data)
    done = {}
    with _one_thread_children():
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                                   initializer=_init_worker,
                                   initargs=(datasets, messages, opts.engine, os.getpid()))
        pending = {pool.submit(_work, i, u, opts) for i, u in enumerate(units)}
    try:
        while pending:
            finished, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
            _drain(messages, units, events, warn)
            for fut in finished:
                i, finished_unit = fut.result()
                unit = units[i]
                events.unit_finished(unit, finished_unit[1])
                done[unit.id] = finished_unit
        _drain(messages, units, events, warn)
    except BaseException:
        # Ctrl-C or a failed unit: stop now; finished units are checkpointed, the rest resume.
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return done


def _drain(messages, units, events, warn) -> None:
    while True:
        try:
            msg = messages.get_nowait()
        except queue_mod.Empty:
            return
        if msg[0] == "start":
            events.unit_started(units[msg[1]])
        elif msg[0] == "progress":
            events.unit_progress(units[msg[1]], msg[2], msg[3])
        else:
            warn(msg[1])
