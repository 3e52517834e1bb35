"""Re-estimate BN running statistics from data (e.g. after weight averaging, pruning, or a
train/test shift): Ioffe & Szegedy 2015, Alg. 2, lines 8-10, the population statistics as the
plain average over mini-batches -- torch's ``momentum=None`` cumulative average."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .._checks import check_positive_int


def batch_input(batch):
    """The model input of a loader item: the item itself or the first of (x, y, ...)."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader: Iterable, num_batches: int | None = None) -> int:
    """Reset and re-estimate the running statistics of every BN in ``model``; returns the number
    of batches used.

    Only the BN layers are switched to train mode (dropout and the rest keep their mode, so the
    statistics are those of the activations the model sees at inference); weights are not
    touched (no_grad, no optimizer). Each BN's momentum and every module's mode are restored.
    """
    if num_batches is not None:
        num_batches = check_positive_int("num_batches", num_batches)
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not bns:
        return 0
    modes = {m: m.training for m in model.modules()}
    momenta = {bn: bn.momentum for bn in bns}
    used = 0
    try:
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
        for batch in loader:
            if num_batches is not None and used >= num_batches:
                break
            model(batch_input(batch))
            used += 1
    finally:
        for bn, momentum in momenta.items():
            bn.momentum = momentum
        for m, training in modes.items():
            m.training = training
    if used == 0:
        raise ValueError("loader: expected at least one batch, got none")
    return used
