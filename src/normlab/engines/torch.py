"""The torch engine: the torch.nn twin of a spec, started from the NumPy model's weights.

One process (:class:`TorchTrainer`) or DistributedDataParallel workers
(:mod:`normlab.torch.ddp`), with the same trainer interface as :class:`.numpy.NumpyTrainer`.
Imported only when the torch engine is asked for, so torch stays optional.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .. import nn
from .._checks import check_positive_int
from ..torch import BatchNorm1d, ddp, training
from ..torch import device as devices
from .spec import CNN_KINDS, RESNET_KINDS, Spec, unknown
from .torch_layers import SeededDropout, cnn_layer
from .torch_resnet import resnet_layer


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

    def batch_norm_1d(self, num_features: int, **options) -> BatchNorm1d:
        """normlab.torch's BatchNorm1d (it has the running-statistics options torch's lacks)."""
        return BatchNorm1d(num_features, **options).to(self.device)

    def state(self) -> dict[str, np.ndarray]:
        return self._steps.state_arrays(self.model, self.opt)

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self._steps.load_state_arrays(self.model, self.opt, arrays)

    def close(self) -> None:
        """Nothing to release (the interface of :class:`normlab.torch.ddp.DistributedTrainer`)."""


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
    # the NumPy layers' dropout generators, so the twin draws the same masks (seeded runs)
    rngs = [m.rng for m in model if isinstance(m, nn.Dropout)]
    if not distributed:
        return TorchTrainer(build_torch(spec, model.state_dict(), rngs), lr, device)
    workers = check_positive_int("workers", workers)
    if workers == 1 and ddp.torchrun_env() is None:
        # one process: its batch is the whole batch, so SyncBatchNorm would be plain BN
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
