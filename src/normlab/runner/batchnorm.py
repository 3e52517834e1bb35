"""The BN layers of a trainer on either engine: find them, run a training-mode forward
without a step, measure training-mode accuracy, and re-estimate their running statistics.

Both engines' BN layers have the same attributes (``running_mean``, ``momentum``,
``reset_running_stats``), so only finding them and the forward differ by engine.
"""

from __future__ import annotations

import numpy as np

from .. import nn


def bn_layers(trainer) -> list:
    """The BatchNorm layers of a trainer's model (same attributes on both engines)."""
    if trainer.engine == "torch":
        kinds = (trainer.torch.nn.modules.batchnorm._BatchNorm,)
    else:
        kinds = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    return [m for m in trainer.model if isinstance(m, kinds)]


def forward_batch_stats(trainer, x: np.ndarray) -> np.ndarray:
    """Logits of a training-mode forward (batch statistics; updates running stats; no step)."""
    trainer.model.train()
    if trainer.engine == "torch":
        torch = trainer.torch
        with torch.no_grad():
            return trainer.model(trainer.tensor(x)).cpu().numpy()
    return trainer.model(x)


def train_mode_accuracy(trainer, x: np.ndarray, y: np.ndarray, batch: int) -> float:
    """Accuracy when every batch of ``batch`` examples is normalised with its own statistics.

    Running statistics are restored afterwards, so the model is left exactly as it was.
    """
    saved = trainer.state()
    try:
        n = len(x) // batch * batch
        correct = sum(int((forward_batch_stats(trainer, x[s:s + batch]).argmax(1)
                           == y[s:s + batch]).sum()) for s in range(0, n, batch))
    finally:
        trainer.load_state(saved)
    return correct / n


def recalibrate(trainer, batches) -> None:
    """Re-estimate every BN layer's running statistics from ``batches`` (inputs only).

    Reset, then a cumulative average (``momentum=None``) over the batches: every batch gets the
    same weight and nothing is left of the old estimates. Weights do not change.
    """
    layers = bn_layers(trainer)
    saved = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
    for xb in batches:
        forward_batch_stats(trainer, xb)
    for m, momentum in zip(layers, saved, strict=True):
        m.momentum = momentum
