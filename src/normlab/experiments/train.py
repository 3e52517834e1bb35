"""Training-loop helpers shared by the experiments, identical in behaviour on both engines.

:class:`NumpyTrainer` and :class:`TorchTrainer` wrap a model built from one spec (see
:mod:`.models`) plus plain SGD and offer the same four operations: one training step, an
eval-mode forward that can also return the input of one layer (a "tap"), and ``state()`` /
``load_state()`` for mid-run checkpoints. Mini-batches are a pure function of (seed, step), so a
resumed run draws exactly the batches the uninterrupted run would have drawn.
"""

from __future__ import annotations

import functools

import numpy as np

from .. import nn, optim
from .._checks import check_positive_int
from .models import Spec, build_numpy, build_torch


class NumpyTrainer:
    """normlab.nn model + normlab.optim.SGD."""

    engine = "numpy"

    def __init__(self, model: nn.Sequential, lr: float):
        self.model = model
        self.loss = nn.CrossEntropyLoss()
        self.opt = optim.SGD(model.parameters(), lr=lr)

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        self.model.train()
        loss = self.loss(self.model(x), y)
        self.opt.zero_grad()
        self.model.backward_params(self.loss.backward())   # nothing needs d(loss)/d(images)
        self.opt.step()
        return loss

    def set_lr(self, lr: float) -> None:
        self.opt.lr = lr

    def close(self) -> None:
        """Nothing to release (the torch trainers may hold processes)."""

    def forward_eval(self, x: np.ndarray, tap: int | None = None):
        """(logits, input of layer ``tap`` or None) in eval mode (running statistics)."""
        self.model.eval()
        tapped = None
        for i, layer in enumerate(self.model):
            if i == tap:
                tapped = x
            x = layer(x)
        return x, tapped

    def state(self) -> dict[str, np.ndarray]:
        out = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        out.update({f"optim.{k}": v for k, v in self.opt.state_dict().items()})
        return out

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.model.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("model.")})
        self.opt.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("optim.")})


class TorchTrainer:
    """torch.nn twin + torch.optim.SGD, started from the NumPy model's weights.

    ``device`` (None: CPU with the process settings left alone, the behaviour before devices
    existed): ``"cpu"``, ``"cuda"``, ``"auto"`` or a ``torch.device``. The weights were drawn on
    CPU by the NumPy builder and move there unchanged; the repeatability settings of
    :func:`normlab.torch.device.deterministic` are applied to this process and kept in
    ``settings`` for the report. Batches move to the device; ``forward_eval`` and ``state()``
    return CPU NumPy arrays, so checkpoints do not depend on the device.
    """

    engine = "torch"

    def __init__(self, model, lr: float, device=None):
        import torch

        from ..torch import device as devices
        from ..torch import training

        self.torch, self._steps = torch, training
        self.device = devices.resolve_device("cpu" if device is None else device)
        self.settings = None if device is None else devices.deterministic(self.device)
        self.model = model.to(self.device)
        self.loss = torch.nn.CrossEntropyLoss()
        self.opt = torch.optim.SGD(model.parameters(), lr=lr)

    def tensor(self, a: np.ndarray):
        """``a`` as a tensor on the trainer's device (for experiments that step by hand)."""
        return self._steps.to_device(a, self.device)

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        return self._steps.sgd_step(self.model, self.loss, self.opt, x, y, self.device).item()

    def set_lr(self, lr: float) -> None:
        self._steps.set_lr(self.opt, lr)

    def forward_eval(self, x: np.ndarray, tap: int | None = None):
        return self._steps.forward_eval(self.model, x, tap, self.device)

    def state(self) -> dict[str, np.ndarray]:
        return self._steps.state_arrays(self.model, self.opt)

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self._steps.load_state_arrays(self.model, self.opt, arrays)

    def close(self) -> None:
        """Nothing to release (the interface of :class:`normlab.torch.ddp.DistributedTrainer`)."""


def make_trainer(engine: str, spec: Spec, init_std: float, rng: np.random.Generator, lr: float,
                 device=None, workers: int = 1, sync_bn: bool = False):
    """A trainer on ``engine`` ("numpy" or "torch"); both draw the weights from ``rng`` the same.

    torch only: ``device`` (see :class:`TorchTrainer`); ``workers`` > 1 trains through
    DistributedDataParallel in that many worker processes, each on 1/workers of every batch
    with its own BN statistics, or the whole batch's with ``sync_bn`` (see
    :mod:`normlab.torch.ddp`; call ``close()`` when done; one process ignores ``sync_bn``: its
    batch is the whole batch). Under torchrun (``RANK``, ``WORLD_SIZE``, ... set) with
    ``workers`` = 1, the launcher's processes are the workers.
    """
    model = build_numpy(spec, init_std, rng)
    if engine == "numpy":
        _numpy_only(device, workers, sync_bn)
        return NumpyTrainer(model, lr)
    if engine != "torch":
        raise ValueError(f"engine: expected 'numpy' or 'torch', got {engine!r}")
    workers = check_positive_int("workers", workers)
    from ..torch import ddp

    if workers == 1 and ddp.torchrun_env() is None:
        # one process: its batch is the whole batch, so SyncBatchNorm would be plain BN
        return TorchTrainer(build_torch(spec, model.state_dict()), lr, device)
    # the workers build their replicas themselves from the NumPy weights (a picklable recipe:
    # a torch module holding a class made at run time, like cnn's activation BN, is not)
    recipe = functools.partial(build_torch, spec, model.state_dict())
    return ddp.distributed_trainer(recipe, lr, None if workers == 1 else workers,
                                   device="cpu" if device is None else device, sync_bn=sync_bn)


def _numpy_only(device, workers, sync_bn) -> None:
    for name, value, default in (("device", device, None), ("workers", workers, 1),
                                 ("sync_bn", sync_bn, False)):
        if value != default and not (name == "device" and value == "cpu"):
            raise ValueError(f"{name}: expected {default!r} with engine 'numpy' (devices, "
                             f"workers and SyncBatchNorm are torch-engine options), "
                             f"got {value!r}")


def epoch_batch(seed_seq: np.random.SeedSequence, n: int, batch: int, step: int) -> np.ndarray:
    """Indices of mini-batch ``step`` when every epoch is a fresh permutation (no replacement).

    The stream is the concatenation of per-epoch permutations, each seeded by (seed_seq, epoch),
    so batch ``step`` is computed from ``step`` alone (nothing to carry across a resume).
    """
    start = step * batch
    out = []
    while len(out) < batch:
        epoch, pos = divmod(start + len(out), n)
        perm = _epoch_permutation(seed_seq, n, epoch)
        out.extend(perm[pos:pos + batch - len(out)])
    return np.asarray(out, dtype=np.int64)


_PERM_CACHE: dict = {}


def _epoch_permutation(seed_seq: np.random.SeedSequence, n: int, epoch: int) -> np.ndarray:
    key = (tuple(seed_seq.entropy) if isinstance(seed_seq.entropy, list) else seed_seq.entropy,
           n, epoch)
    perm = _PERM_CACHE.get(key)
    if perm is None:
        words = list(np.atleast_1d(seed_seq.entropy)) + [epoch]
        perm = np.random.default_rng(np.random.SeedSequence(words)).permutation(n)
        _PERM_CACHE.clear()  # only the current epoch is ever needed again
        _PERM_CACHE[key] = perm
    return perm


def replacement_batch(seed_seq: np.random.SeedSequence, n: int, batch: int,
                      step: int) -> np.ndarray:
    """Indices of mini-batch ``step`` drawn with replacement (the textbook's np.random.choice)."""
    words = list(np.atleast_1d(seed_seq.entropy)) + [step]
    return np.random.default_rng(np.random.SeedSequence(words)).choice(n, batch)


def evaluate(trainer, x: np.ndarray, y: np.ndarray, tap: int | None = None,
             chunk: int = 2000) -> tuple[float, np.ndarray | None]:
    """(accuracy, tapped layer input over all of x) in eval mode, in chunks to bound memory."""
    correct, taps = 0, []
    for s in range(0, len(x), chunk):
        logits, tapped = trainer.forward_eval(x[s:s + chunk], tap)
        correct += int((logits.argmax(axis=1) == y[s:s + chunk]).sum())
        if tapped is not None:
            taps.append(tapped)
    return correct / max(len(x), 1), (np.concatenate(taps) if taps else None)
