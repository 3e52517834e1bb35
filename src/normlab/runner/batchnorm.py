"""The BN layers of a trainer on either engine: training-mode accuracy, and re-estimating
their running statistics.

Both engines' BN layers have the same attributes (``running_mean``, ``momentum``,
``reset_running_stats``); finding them (``trainer.bn_layers()``) and the training-mode forward
(``trainer.forward_train``) are the trainer's.
"""

from __future__ import annotations

import numpy as np


def train_mode_correct(trainer, x: np.ndarray, y: np.ndarray, batch: int) -> np.ndarray:
    """Which examples are right when every batch of ``batch`` examples (and the remainder, if it
    holds at least 2) is normalised with its own statistics; the remainder's single example, if
    any, counts as wrong (one value per channel has no variance). Running statistics restored.
    """
    saved = trainer.state()
    out = []
    try:
        for s in range(0, len(x), batch):
            xb = x[s:s + batch]
            if len(xb) < 2 <= batch:   # a 1-image remainder (batch 1 itself raises below)
                out.append(np.zeros(len(xb), dtype=bool))
                continue
            out.append(trainer.forward_train(xb).argmax(1) == y[s:s + batch])
    finally:
        trainer.load_state(saved)
    return np.concatenate(out)


def train_mode_accuracy(trainer, x: np.ndarray, y: np.ndarray, batch: int) -> float:
    """Accuracy when every batch of ``batch`` examples is normalised with its own statistics.

    Running statistics are restored afterwards, so the model is left exactly as it was.
    """
    saved = trainer.state()
    try:
        n = len(x) // batch * batch
        correct = sum(int((trainer.forward_train(x[s:s + batch]).argmax(1)
                           == y[s:s + batch]).sum()) for s in range(0, n, batch))
    finally:
        trainer.load_state(saved)
    return correct / n


def recalibrate(trainer, batches) -> None:
    """Re-estimate every BN layer's running statistics from ``batches`` (inputs only).

    Reset, then a cumulative average (``momentum=None``) over the batches: every batch gets the
    same weight and nothing is left of the old estimates. Weights do not change.
    """
    layers = trainer.bn_layers()
    saved = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
    for xb in batches:
        trainer.forward_train(xb)
    for m, momentum in zip(layers, saved, strict=True):
        m.momentum = momentum
