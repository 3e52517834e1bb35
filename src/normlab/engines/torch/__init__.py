"""The torch engine: the torch.nn twin of a spec, started from the NumPy model's weights.

One process (:class:`TorchTrainer`) or DistributedDataParallel workers
(:mod:`.ddp`), with the same trainer interface as :class:`..numpy.NumpyTrainer`.
Imported only when the torch engine is asked for, so torch stays optional.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from ... import nn
from ..._checks import check_positive_int
from ...torch import BatchNorm1d
from ...torch import device as devices
from ..numpy import BN_BUFFERS
from ..spec import CNN_KINDS, RESNET_KINDS, Spec, unknown
from ..torch_layers import SeededDropout, cnn_layer
from ..torch_resnet import resnet_layer
from . import ddp, training


class TorchTrainer:
    """torch.nn twin + torch.optim.SGD, started from the NumPy model's weights.

    ``device`` (None: CPU with the process settings left alone, the behaviour before devices
    existed): ``"cpu"``, ``"cuda"``, ``"auto"`` or a ``torch.device``. The weights were drawn on
    CPU by the NumPy builder and move there unchanged; the repeatability settings of
    :func:`normlab.torch.device.deterministic` are applied to this process and kept in
    ``settings`` for the report. Batches move to the device; ``forward_eval``, ``state()`` and
    the model-reaching methods of :class:`..numpy.NumpyTrainer` return CPU NumPy arrays, so
    checkpoints and experiments do not depend on the device or the engine.
    """

    engine = "torch"

    def __init__(self, model, lr: float, device=None):
        self._steps = training
        self.device = devices.resolve_device("cpu" if device is None else device)
        self.settings = None if device is None else devices.deterministic(self.device)
        self.model = model.to(self.device)
        self.loss = torch.nn.CrossEntropyLoss()
        self.opt = torch.optim.SGD(model.parameters(), lr=lr)

    def _tensor(self, a: np.ndarray):
        """``a`` as a tensor on the trainer's device."""
        return self._steps.to_device(a, self.device)

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        return self._steps.sgd_step(self.model, self.loss, self.opt, x, y, self.device).item()

    def set_lr(self, lr: float) -> None:
        self._steps.set_lr(self.opt, lr)

    def forward_eval(self, x: np.ndarray, tap: int | None = None):
        return self._steps.forward_eval(self.model, x, tap, self.device)

    def batch_norm_1d(self, num_features: int, **options) -> BatchNorm1d:
        """normlab.torch's BatchNorm1d (it has the running-statistics options torch's lacks)."""
        return BatchNorm1d(num_features, **options).to(self.device)

    def bn_layers(self) -> list:
        """The model's BatchNorm layers (torch's and normlab.torch's), in order."""
        return [m for m in self.model if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]

    def replace_layers(self, layers: list) -> None:
        """The model's layers become ``layers`` (same length), in place, so the model stays
        on the device; a Parameter they share with the old ones stays in the optimizer."""
        for i, m in enumerate(layers):
            self.model[i] = m

    def bn_buffers(self) -> list[dict[str, np.ndarray]]:
        """Per BN layer, its :data:`.numpy.BN_BUFFERS` that exist, as CPU NumPy arrays."""
        return [{name: v.detach().cpu().numpy() for name in BN_BUFFERS
                 if (v := getattr(m, name, None)) is not None} for m in self.bn_layers()]

    def forward_train(self, x: np.ndarray) -> np.ndarray:
        """Logits of a training-mode forward: batch statistics, running statistics updated, no
        gradient and no step."""
        self.model.train()
        with torch.no_grad():
            return self.model(self._tensor(x)).cpu().numpy()

    def train_step_if_finite(self, x: np.ndarray, y: np.ndarray) -> float:
        """One SGD step, skipped when the loss is not finite (as ``torch.amp.GradScaler``
        skips it); the training-mode forward, and BN's running-statistic update, happen anyway.
        The loss."""
        self.model.train()
        loss = self.loss(self.model(self._tensor(x)), self._tensor(y))
        if torch.isfinite(loss):
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
        return float(loss.detach())

    def loss_and_grad(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """Training-mode loss and the gradient over all parameters, flattened in
        ``parameters()`` order as float64 (no step)."""
        self.model.train()
        loss = self.loss(self.model(self._tensor(x)), self._tensor(y))
        self.opt.zero_grad()
        loss.backward()
        grads = [p.grad.cpu().numpy() for p in self.model.parameters()]
        return float(loss.detach()), np.concatenate([g.ravel() for g in grads]).astype(np.float64)

    def parameter_arrays(self) -> list[np.ndarray]:
        """Copies of the model's parameters as CPU NumPy arrays, in ``parameters()`` order."""
        return [p.detach().cpu().numpy().copy() for p in self.model.parameters()]

    def load_parameter_arrays(self, values: list[np.ndarray]) -> None:
        """Overwrite the model's parameters, in ``parameters()`` order, with ``values``."""
        with torch.no_grad():
            for p, v in zip(self.model.parameters(), values, strict=True):
                p.copy_(self._tensor(v))

    def state(self) -> dict[str, np.ndarray]:
        return self._steps.state_arrays(self.model, self.opt)

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self._steps.load_state_arrays(self.model, self.opt, arrays)

    def close(self) -> None:
        """Nothing to release (the interface of :class:`.ddp.DistributedTrainer`)."""


def trainer(spec: Spec, model, lr: float, device=None, workers: int = 1, sync_bn: bool = False,
            distributed: bool = True):
    """The torch trainer of ``spec`` started from the NumPy ``model``'s weights.

    ``workers`` > 1 trains through DistributedDataParallel in that many worker processes, each
    on 1/workers of every batch with its own BN statistics, or the whole batch's with
    ``sync_bn`` (call ``close()`` when done; one process ignores ``sync_bn``: its batch is the
    whole batch). Under torchrun (``RANK``, ``WORLD_SIZE``, ... set) with ``workers`` = 1, the
    launcher's processes are the workers, unless ``distributed`` is False (an experiment that
    reaches into its model trains in this process).
    """
    if distributed:
        workers = check_positive_int("workers", workers)
    # one process (its batch is the whole batch, so SyncBatchNorm would be plain BN)
    if not distributed or (workers == 1 and ddp.torchrun_env() is None):
        # the NumPy layers' dropout generators, so the twin draws the same masks (seeded runs)
        rngs = [m.rng for m in model if isinstance(m, nn.Dropout)]
        return TorchTrainer(build_torch(spec, model.state_dict(), rngs), lr, device)
    # the workers build their replicas themselves from the NumPy weights (a picklable recipe)
    recipe = functools.partial(build_torch, spec, model.state_dict())
    return ddp.distributed_trainer(recipe, lr, None if workers == 1 else workers,
                                   device="cpu" if device is None else device, sync_bn=sync_bn)


def build_torch(spec: Spec, state_dict: dict[str, np.ndarray],
                dropout_rngs: list[np.random.Generator] | None = None) -> torch.nn.Sequential:
    """The torch.nn twin of ``spec`` with ``state_dict`` (from :func:`.numpy.build_numpy`)
    loaded; its dropout layers draw their masks from ``dropout_rngs`` (the NumPy twin's
    generators, in order). Distributed workers get none: a spec with dropout is refused there,
    since each worker would draw the same masks for its own shard."""
    rngs = iter(dropout_rngs or ())
    layers = []
    for layer in spec:
        kind = layer[0]
        if kind == "linear":
            layers.append(torch.nn.Linear(layer[1], layer[2]))
        elif kind == "bn1d":
            layers.append(torch.nn.BatchNorm1d(layer[1], eps=layer[2]))
        elif kind == "sigmoid":
            layers.append(torch.nn.Sigmoid())
        elif kind == "relu":
            layers.append(torch.nn.ReLU())
        elif kind == "dropout":
            rng = next(rngs, None)
            if rng is None:
                raise ValueError("dropout_rngs: expected one NumPy generator per dropout layer "
                                 "(torch's own dropout is not seeded by the run), got too few")
            layers.append(SeededDropout(layer[1], rng))
        elif kind in CNN_KINDS:
            layers.append(cnn_layer(layer))
        elif kind in RESNET_KINDS:
            layers.append(resnet_layer(layer))
        else:
            raise unknown(kind)
    model = torch.nn.Sequential(*layers)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()})
    return model
