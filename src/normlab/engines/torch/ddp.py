"""Data-parallel training through DistributedDataParallel, with BN per worker or synchronised.

The GroupNorm paper's setup (Wu & He 2018, sec. 4 and Fig. 1): P workers (GPUs) each normalise
their own N = B / P images, while the gradient is over all B. PyTorch's DDP gives exactly this:
after ``backward`` it all-reduces every parameter gradient and divides by P, so each replica
takes the same SGD step; with ``broadcast_buffers=False`` (``forward_sync_buffers=False`` in
torch >= 2.13) each worker keeps its own BN running statistics (DDP's default would copy rank
0's over them before every forward). ``sync_bn``
instead converts the BNs to :class:`normlab.torch.SyncBatchNorm`: statistics over all B images.

Equivalence with one process (``tests/engines/test_torch_ddp.py``). Worker r trains on the
contiguous slice r of size N, in :func:`normlab.functional.ghost.virtual_splits` order, so a step
with per-worker BN is a step of ghost BN with groups of N (Hoffer et al. 2017): the same groups are
normalised alike, the mean of the workers' mean losses is the batch's mean loss, and the mean of
their gradients is its gradient. Running statistics: each worker's EMA r <- (1 - m) r + m s_r is
linear, so the mean of the P EMAs is the EMA of the mean statistics -- ghost BN's one update per
step from the groups' mean (:func:`normlab.functional.ghost.ghost_running_update`). Eval and
``state()`` therefore first replace every worker's running statistics by their mean (all-reduce):
that leaves the mean, hence every later result, unchanged and makes all workers' states equal,
so a checkpoint loaded into every worker continues exactly as the uninterrupted run.

Two ways to run, one interface (``train_step(x, y)`` on the whole batch, ``forward_eval``,
``state`` / ``load_state`` with CPU NumPy arrays, ``set_lr``, ``close``):

* ``DistributedTrainer(recipe, lr, workers=P)``: this process starts P workers once (spawn;
  gloo on CPU, NCCL on CUDA with worker r on ``cuda:r``; a file store in a temporary folder,
  so no port is needed), sends worker r its slice of every batch and gets the mean loss back.
* Under ``torchrun --nproc-per-node P script.py``, every process runs the same script with the
  same seeds and calls :func:`distributed_trainer` with ``workers=None``: it gets its own
  :class:`Replica`, joined through torchrun's ``env://`` variables (``cuda:LOCAL_RANK`` on
  CUDA). All processes train, evaluate and return the same state; only ``rank`` 0 should write
  files.

``recipe`` is a picklable callable that builds the model with its initial weights (for the
experiments: ``functools.partial(build_torch, spec, numpy_state_dict)``), so every worker starts
from the weights drawn in the parent.
"""

from __future__ import annotations

import inspect
import os
import weakref

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..._checks import check_positive_int
from ...functional.ghost import virtual_splits
from ...torch.device import deterministic, resolve_device
from ...torch.sync import convert_sync_batchnorm
from . import training
from ._workers import Pool, WorkerError

__all__ = ["DistributedTrainer", "Replica", "WorkerError", "distributed_trainer", "shards",
           "torchrun_env"]

RUNNING = ("running_mean", "running_var")
# per-worker running statistics: DDP must not copy rank 0's buffers over them before every
# forward (torch >= 2.13 names this forward_sync_buffers; its start-up copy is harmless here,
# since every worker builds the same initial buffers)
_LOCAL_BUFFERS = ({"forward_sync_buffers": False}
                  if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                  else {"broadcast_buffers": False})
TORCHRUN = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def torchrun_env() -> dict[str, int] | None:
    """{rank, world, local_rank} when a launcher (torchrun) set ``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR`` and ``MASTER_PORT`` for this process, else None."""
    if not all(k in os.environ for k in TORCHRUN):
        return None
    return {"rank": int(os.environ["RANK"]), "world": int(os.environ["WORLD_SIZE"]),
            "local_rank": int(os.environ.get("LOCAL_RANK", "0"))}


def shards(batch: int, workers: int) -> list[tuple[int, int]]:
    """Worker r's [start, stop) of a batch: ghost BN's virtual batches of N = batch / workers."""
    if batch <= 0 or batch % workers:
        raise ValueError(f"x: expected a batch divisible by workers={workers} (every worker "
                         f"normalises N = batch / workers images), got {batch}")
    return virtual_splits(batch, batch // workers)


class Replica:
    """One worker's model: DDP for training steps, the plain module for eval and state.

    Needs an initialised default process group (:meth:`from_torchrun` makes one).
    """

    engine = "torch"

    def __init__(self, recipe, lr: float, device: torch.device, sync_bn: bool = False,
                 warn_only: bool = False, owns_group: bool = False):
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.device, self._owns_group = device, owns_group
        self.settings = deterministic(device, warn_only)   # before any CUDA work
        model = recipe()
        if sync_bn:
            model = convert_sync_batchnorm(model)
        self.module = model.to(device)
        self.net = DistributedDataParallel(
            self.module, device_ids=[device.index] if device.type == "cuda" else None,
            **_LOCAL_BUFFERS)
        self.loss = torch.nn.CrossEntropyLoss()
        self.opt = torch.optim.SGD(self.module.parameters(), lr=lr)
        self._stale = False   # running statistics differ across workers since the last sync

    @classmethod
    def from_torchrun(cls, recipe, lr: float, device="auto", sync_bn: bool = False,
                      warn_only: bool = False) -> Replica:
        """This process's replica under torchrun (gloo on CPU, NCCL on ``cuda:LOCAL_RANK``)."""
        env = torchrun_env()
        if env is None:
            unset = [k for k in TORCHRUN if k not in os.environ]
            raise ValueError(f"workers: expected torchrun's {', '.join(TORCHRUN)} in the "
                             f"environment for workers=None, got {', '.join(unset)} unset")
        device = resolve_device(device)
        if device.type == "cuda":
            device = torch.device("cuda", env["local_rank"])
            torch.cuda.set_device(device)
        owns = not dist.is_initialized()
        if owns:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                    init_method="env://")
        return cls(recipe, lr, device, sync_bn, warn_only, owns_group=owns)

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One step on the whole batch: this worker takes its slice."""
        start, stop = shards(len(x), self.world)[self.rank]
        return self.train_shard(x[start:stop], y[start:stop])

    def train_shard(self, x: np.ndarray, y: np.ndarray) -> float:
        loss = training.sgd_step(self.net, self.loss, self.opt, x, y, self.device)
        dist.all_reduce(loss)   # sum of the workers' mean losses; / P: the batch's mean loss
        self._stale = True
        return loss.item() / self.world

    @torch.no_grad()
    def sync_stats(self) -> None:
        """Every worker's running statistics := their mean over workers (module docstring)."""
        if not self._stale:
            return
        for m in self.module.modules():
            for name, buf in m.named_buffers(recurse=False):
                if name in RUNNING and buf is not None:
                    dist.all_reduce(buf)
                    buf.div_(self.world)
        self._stale = False

    def forward_eval(self, x: np.ndarray, tap: int | None = None):
        self.sync_stats()
        return training.forward_eval(self.module, x, tap, self.device)

    def state(self) -> dict[str, np.ndarray]:
        self.sync_stats()
        return training.state_arrays(self.module, self.opt)

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        training.load_state_arrays(self.module, self.opt, arrays)
        self._stale = False   # every worker loaded the same arrays

    def set_lr(self, lr: float) -> None:
        training.set_lr(self.opt, lr)

    def close(self) -> None:
        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()
        self._owns_group = False


def _serve(rank: int, scratch: str, world: int, recipe, lr: float, device_type: str,
           sync_bn: bool, threads: int, warn_only: bool) -> Replica:
    """Worker ``rank``'s setup (runs in the worker process): its group, device and replica."""
    torch.set_num_threads(threads)
    device = torch.device("cpu")
    if device_type == "cuda":
        device = torch.device("cuda", rank)
        torch.cuda.set_device(device)
    # a file store in the pool's scratch folder: no port to find, none to collide
    store = os.path.join(scratch, "store")
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo",
                            init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        return Replica(recipe, lr, device, sync_bn, warn_only, owns_group=True)
    except BaseException:
        dist.destroy_process_group()
        raise


class DistributedTrainer:
    """``workers`` DDP worker processes driven from this one (module docstring).

    ``threads``: torch threads per worker (1, like ``--jobs`` workers: the models are small, and
    a fixed count keeps CPU results independent of the machine). ``close()`` (or ``with``)
    stops the workers; they also stop when this process dies.
    """

    engine = "torch"
    rank = 0

    def __init__(self, recipe, lr: float, workers: int = 2, *, device="cpu",
                 sync_bn: bool = False, threads: int = 1, warn_only: bool = False):
        self.workers = check_positive_int("workers", workers)
        threads = check_positive_int("threads", threads)
        if torchrun_env() is not None:
            raise ValueError(f"workers: expected None under torchrun (its processes are the "
                             f"workers), got {workers}")
        self.device, self.sync_bn = resolve_device(device), bool(sync_bn)
        if self.device.type == "cuda" and workers > torch.cuda.device_count():
            raise ValueError(f"workers: expected at most {torch.cuda.device_count()} on CUDA "
                             f"(one GPU per worker: NCCL cannot share one), got {workers}")
        self._pool = Pool(workers, _serve, (workers, recipe, lr, self.device.type,
                                            self.sync_bn, threads, warn_only))
        # also at garbage collection and interpreter exit, so a forgotten close() leaks nothing
        self._finalizer = weakref.finalize(self, self._pool.shutdown)
        self.settings = self._pool.ready[0]

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids."""
        return self._pool.pids

    def _all(self, method: str, *args) -> list:
        for r in range(self.workers):
            self._pool.call(r, method, *args)
        return self._pool.gather(range(self.workers))

    def _on_first(self, method: str, *args):
        # the others take part in the statistics all-reduce that rank 0's call starts
        self._pool.call(0, method, *args)
        for r in range(1, self.workers):
            self._pool.call(r, "sync_stats")
        return self._pool.gather(range(self.workers))[0]

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One SGD step on the whole batch; worker r gets slice r; the batch's mean loss."""
        parts = shards(len(x), self.workers)
        for r, (start, stop) in enumerate(parts):
            self._pool.call(r, "train_shard", x[start:stop], y[start:stop])
        return self._pool.gather(range(self.workers))[0]

    def forward_eval(self, x: np.ndarray, tap: int | None = None):
        """(logits, input of layer ``tap``) in eval mode, with the workers' mean statistics."""
        return self._on_first("forward_eval", x, tap)

    def state(self) -> dict[str, np.ndarray]:
        """Weights, mean running statistics and optimizer state, as CPU NumPy arrays."""
        return self._on_first("state")

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Load the model and optimizer state from ``arrays`` on every worker."""
        self._all("load_state", arrays)

    def set_lr(self, lr: float) -> None:
        """Set the learning rate on every worker."""
        self._all("set_lr", lr)

    def close(self) -> None:
        """Stop the workers and tear down the process group (also on exit of a ``with`` block)."""
        self._finalizer()

    def __enter__(self) -> DistributedTrainer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def distributed_trainer(recipe, lr: float, workers: int | None = None, *, device="cpu",
                        sync_bn: bool = False, warn_only: bool = False):
    """``workers`` processes started here, or (None) this torchrun process's :class:`Replica`."""
    if workers is None:
        return Replica.from_torchrun(recipe, lr, device, sync_bn, warn_only)
    return DistributedTrainer(recipe, lr, workers, device=device, sync_bn=sync_bn,
                              warn_only=warn_only)
