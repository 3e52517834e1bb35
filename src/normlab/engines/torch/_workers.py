"""Worker processes that serve method calls over a pipe, and never outlive their parent.

:class:`Pool` starts P ``spawn`` processes (fork would copy the parent's threads and CUDA state)
and makes them a scratch folder. Worker r calls ``setup(rank, scratch, *args)`` once; the object
it returns answers the parent's ``(method, args)`` messages, one ``("ok", result)`` or
``("error", one line)`` reply each. A worker leaves its loop on ``close``, on an error (after
replying: a collective it failed in leaves the other workers' group unusable, so it must not
carry on) and when its parent is gone: the pipe reports EOF when the parent dies while the
worker waits for a message, and a watchdog thread polls the parent pid for the case where the
worker is blocked in a collective. So no worker is orphaned by ``kill -9`` of the parent alone,
and an orphan removes the scratch folder the dead parent can no longer remove. SIGINT is
ignored: Ctrl-C reaches the whole foreground process group, and it is the parent that decides
what stops.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from functools import partial
from multiprocessing.connection import wait

from ..._orphans import POLL_S, exit_with_parent


class WorkerError(RuntimeError):
    """A worker failed or died; the message is one line naming the worker."""


def one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _main(rank: int, conn, parent_pid: int, scratch: str, setup, args: tuple) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # also while blocked in a collective that would otherwise wait for its timeout
    exit_with_parent(parent_pid, partial(shutil.rmtree, scratch, ignore_errors=True))
    server, closing = None, False
    try:
        server = setup(rank, scratch, *args)
        conn.send(("ok", getattr(server, "settings", None)))
        while not closing:
            method, call_args = conn.recv()   # EOFError: the parent is gone (close comes first)
            closing = method == "close"
            if not closing:
                conn.send(("ok", getattr(server, method)(*call_args)))
    except BaseException as exc:  # noqa: BLE001 - every failure goes back as one line
        try:
            conn.send(("error", one_line(exc)))
        except OSError:
            pass
    finally:
        if server is not None:
            server.close()
        conn.close()
        if not closing:
            # the pool is broken (this worker's collectives fail from now on) and the parent
            # may be dead, unable to remove the scratch folder; a live parent's rmtree ignores
            # that it is gone
            shutil.rmtree(scratch, ignore_errors=True)
        sys.stdout.flush()
        sys.stderr.flush()
        # skip the interpreter's teardown: torch's C++ static destructors take ~2 s here, and
        # nothing is left to write (the replies went out above)
        os._exit(0 if closing else 1)


class Pool:
    """P worker processes; ``call`` sends to some, ``gather`` collects one reply from each."""

    def __init__(self, workers: int, setup, args: tuple):
        ctx = multiprocessing.get_context("spawn")
        self.procs, self.conns, self.closed = [], [], False
        self.scratch = tempfile.mkdtemp(prefix="normlab-ddp-")
        try:
            for rank in range(workers):
                mine, theirs = ctx.Pipe()
                proc = ctx.Process(target=_main, name=f"normlab-ddp-{rank}", daemon=True,
                                   args=(rank, theirs, os.getpid(), self.scratch, setup, args))
                proc.start()
                theirs.close()   # so that EOF reaches us if the worker dies
                self.procs.append(proc)
                self.conns.append(mine)
        except BaseException:
            self.shutdown(grace_s=0.0)
            raise
        self.ready = self.gather(range(workers))

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def call(self, rank: int, method: str, *args) -> None:
        if self.closed:
            raise WorkerError("the worker processes are closed")
        try:
            self.conns[rank].send((method, args))
        except OSError:
            self.fail(rank, "its pipe is closed")

    def gather(self, ranks) -> list:
        """One reply from each of ``ranks`` (in rank order); the first failure stops them all."""
        ranks, out = list(ranks), {}
        pending = set(ranks)
        while pending:
            wait([self.conns[r] for r in pending] + [self.procs[r].sentinel for r in pending])
            for r in sorted(pending):
                if self.conns[r].poll():
                    try:
                        status, value = self.conns[r].recv()
                    except (EOFError, OSError):
                        status, value = "error", self._exit_note(r)
                elif not self.procs[r].is_alive():
                    status, value = "error", self._exit_note(r)
                else:
                    continue
                pending.discard(r)
                if status != "ok":
                    self.fail(r, value)
                out[r] = value
        return [out[r] for r in ranks]

    def _exit_note(self, rank: int) -> str:
        self.procs[rank].join(POLL_S)
        return f"exited without replying (exit code {self.procs[rank].exitcode})"

    def fail(self, rank: int, message: str) -> None:
        # the others may be blocked in a collective with the failed worker: no graceful close
        self.shutdown(grace_s=0.0)
        raise WorkerError(f"DDP worker {rank}: {message}")

    def shutdown(self, grace_s: float = 10.0) -> None:
        """Ask every worker to stop, wait up to ``grace_s``, then kill what is left."""
        if self.closed:
            return
        self.closed = True
        for conn in self.conns:
            try:
                conn.send(("close", ()))
            except OSError:
                pass
        deadline = time.monotonic() + grace_s
        for proc in self.procs:
            proc.join(max(0.0, deadline - time.monotonic()))
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()
                proc.join(5.0)
        for conn in self.conns:
            conn.close()
        shutil.rmtree(self.scratch, ignore_errors=True)
