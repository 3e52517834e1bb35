"""Training-loop helpers shared by the experiments, identical in behaviour on both engines.

:class:`NumpyTrainer` and :class:`TorchTrainer` wrap a model built from one spec (see
:mod:`.models`) plus plain SGD and offer the same four operations: one training step, an
eval-mode forward that can also return the input of one layer (a "tap"), and ``state()`` /
``load_state()`` for mid-run checkpoints. Mini-batches are a pure function of (seed, step), so a
resumed run draws exactly the batches the uninterrupted run would have drawn.
"""

from __future__ import annotations

import numpy as np

from .. import nn, optim
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
        self.model.backward(self.loss.backward())
        self.opt.step()
        return loss

    def set_lr(self, lr: float) -> None:
        self.opt.lr = lr

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
    """torch.nn twin + torch.optim.SGD, started from the NumPy model's weights."""

    engine = "torch"

    def __init__(self, model, lr: float):
        import torch

        self.torch = torch
        self.model = model
        self.loss = torch.nn.CrossEntropyLoss()
        self.opt = torch.optim.SGD(model.parameters(), lr=lr)

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        torch = self.torch
        self.model.train()
        loss = self.loss(self.model(torch.from_numpy(x)), torch.from_numpy(y))
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss.item()

    def set_lr(self, lr: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr

    def forward_eval(self, x: np.ndarray, tap: int | None = None):
        torch = self.torch
        self.model.eval()
        tapped = None
        with torch.no_grad():
            h = torch.from_numpy(x)
            for i, layer in enumerate(self.model):
                if i == tap:
                    tapped = h.numpy().copy()
                h = layer(h)
        return h.numpy(), tapped

    def state(self) -> dict[str, np.ndarray]:
        out = {f"model.{k}": v.detach().numpy().copy() for k, v in self.model.state_dict().items()}
        for i, p in enumerate(self.model.parameters()):
            buf = self.opt.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                out[f"optim.momentum_buffer.{i}"] = buf.numpy().copy()
        return out

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        torch = self.torch
        self.model.load_state_dict({k[6:]: torch.from_numpy(np.array(v))
                                    for k, v in arrays.items() if k.startswith("model.")})
        params = list(self.model.parameters())
        for k, v in arrays.items():
            if k.startswith("optim.momentum_buffer."):
                p = params[int(k.rsplit(".", 1)[1])]
                self.opt.state[p]["momentum_buffer"] = torch.from_numpy(np.array(v))


def make_trainer(engine: str, spec: Spec, init_std: float, rng: np.random.Generator, lr: float):
    """A trainer on ``engine`` ("numpy" or "torch"); both draw the weights from ``rng`` the same."""
    model = build_numpy(spec, init_std, rng)
    if engine == "numpy":
        return NumpyTrainer(model, lr)
    if engine == "torch":
        return TorchTrainer(build_torch(spec, model.state_dict()), lr)
    raise ValueError(f"engine: expected 'numpy' or 'torch', got {engine!r}")


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
