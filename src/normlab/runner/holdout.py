"""Train / validation / test parts of a dataset, the same for every experiment and seed.

Learning rates and target accuracies are chosen on a validation part carved from the training
data; the test set is evaluated once, at the end of a run, and never steers a choice. The split
is stratified by class and fixed (a constant seed), so it is a property of the data set, like
its train/test split, not of an experiment or a seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..data import Dataset
from .cnn import as_images

VALIDATION_FRACTION = 0.1
SPLIT_SEED = 20160713  # any constant: the validation part must not move with the run seed


@dataclass(frozen=True)
class Part:
    """Images (N, H, W) float32 and labels (N,) of one part."""

    x: np.ndarray
    y: np.ndarray
    _images: dict = field(default_factory=dict, repr=False, compare=False)

    def flat(self) -> tuple[np.ndarray, np.ndarray]:
        """(x (N, H*W), y) for the MLPs."""
        return self.x.reshape(len(self.x), -1), self.y

    def images(self, pool: bool = True) -> np.ndarray:
        """:func:`~.cnn.as_images` of x, pooled once per part (:func:`parts` keeps one Parts
        per process, so once per worker: pooling 5,000 MNIST images took ~30 ms of every quick
        CNN run) and handed out as a fresh copy (~1 ms), which a run may change."""
        if pool not in self._images:
            self._images[pool] = as_images(self.x, pool)
        return self._images[pool].copy()

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Parts:
    train: Part
    val: Part
    test: Part


_CACHE: dict[tuple, Parts] = {}


def parts(data: Dataset) -> Parts:
    """The train / validation / test parts of ``data`` (validation = 10% of its training set)."""
    key = (data.name, data.fingerprint, len(data.y_train), len(data.y_test))
    if key not in _CACHE:
        _CACHE.clear()   # one data set per process at a time
        _CACHE[key] = _split(data)
    return _CACHE[key]


def _split(data: Dataset) -> Parts:
    rng = np.random.default_rng(SPLIT_SEED)
    val = []
    for c in np.unique(data.y_train):
        idx = np.flatnonzero(data.y_train == c)
        val.append(rng.choice(idx, int(round(len(idx) * VALIDATION_FRACTION)), replace=False))
    is_val = np.zeros(len(data.y_train), dtype=bool)
    is_val[np.concatenate(val)] = True
    # keep the original order inside each part: any prefix stays a shuffled, stratified sample
    return Parts(Part(data.x_train[~is_val], data.y_train[~is_val]),
                 Part(data.x_train[is_val], data.y_train[is_val]),
                 Part(data.x_test, data.y_test))
