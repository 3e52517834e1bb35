"""Ghost batch normalization: batch norm over "virtual" sub-batches.

Hoffer, Hubara & Soudry 2017, "Train longer, generalize better", sec. 4 (Alg. 1): the batch is
split into virtual batches of ``virtual_batch_size`` samples and each is normalised with its own
statistics (Keras' ``BatchNormalization(virtual_batch_size=...)``). Training only: inference uses
the running statistics like plain batch norm.

Every virtual batch is an ordinary batch-norm call (:mod:`normlab.functional.batch`) on a slice,
so the forward and the backward are compositions, not new math.

Splitting: consecutive chunks of ``virtual_batch_size``; a remainder forms its own virtual batch,
except a remainder of one sample, which joins the previous chunk (one sample has no batch
variance in a (N, C) input).

Running statistics, once per step: the count-weighted mean of the virtual batches' means and of
their *unbiased* variances, then one momentum update -- with equal chunks, simply the mean of the
per-chunk statistics. With a single virtual batch this is exactly batch norm's update.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from .._checks import check_positive_int
from .batch import (
    BatchNormCache,
    affine_channels,
    batch_norm_backward,
    check_count,
    check_input,
    train_checked,
)
from .running import blend


def virtual_splits(batch: int, virtual_batch_size: int) -> list[tuple[int, int]]:
    """[(start, stop), ...] covering range(batch); a 1-sample remainder joins the last chunk."""
    virtual_batch_size = check_positive_int("virtual_batch_size", virtual_batch_size)
    bounds = list(range(0, batch, virtual_batch_size)) + [batch]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1 and virtual_batch_size > 1:
        del bounds[-2]
    return list(zip(bounds[:-1], bounds[1:], strict=False))


class GhostCache(NamedTuple):
    splits: list[tuple[int, int]]
    caches: list[BatchNormCache]
    affine: bool


def split_forward(x: np.ndarray, splits: list[tuple[int, int]], forward: Callable
                  ) -> tuple[list[np.ndarray], list]:
    """([y per virtual batch], [cache per virtual batch]) of ``forward(x[start:stop])``."""
    outs, caches = [], []
    for start, stop in splits:
        y, cache = forward(x[start:stop])
        outs.append(y)
        caches.append(cache)
    return outs, caches


def split_backward(dy: np.ndarray, splits: list[tuple[int, int]], caches: list,
                   backward: Callable, affine: bool
                   ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(dx, dweight, dbias) of virtual batches: ``backward`` per slice; the shared gamma and
    beta sum the slices' gradients."""
    grads = [backward(dy[start:stop], c)
             for (start, stop), c in zip(splits, caches, strict=True)]
    dx = np.concatenate([g[0] for g in grads], axis=0)
    if not affine:
        return dx, None, None
    dweight, dbias = 0.0, 0.0
    for _, dw, db in grads:
        dweight = dweight + dw
        dbias = dbias + db
    return dx, dweight, dbias


def ghost_batch_norm_train(x: np.ndarray, virtual_batch_size: int,
                           weight: np.ndarray | None = None, bias: np.ndarray | None = None,
                           eps: float = 1e-5) -> tuple[np.ndarray, GhostCache]:
    """Training forward: batch norm on each virtual batch, sharing gamma and beta."""
    x = check_input(x, affine_channels(weight, bias), training=True)
    return ghost_train_checked(x, virtual_batch_size, weight, bias, eps)


def ghost_train_checked(x: np.ndarray, virtual_batch_size: int, weight: np.ndarray | None,
                        bias: np.ndarray | None, eps: float) -> tuple[np.ndarray, GhostCache]:
    """:func:`ghost_batch_norm_train` of an ``x`` its caller has checked
    (:func:`~.batch.check_input`); each virtual batch still needs a batch variance."""
    splits = virtual_splits(x.shape[0], virtual_batch_size)

    def forward(part):
        check_count(part.shape)
        return train_checked(part, weight, bias, eps)

    outs, caches = split_forward(x, splits, forward)
    return np.concatenate(outs, axis=0), GhostCache(splits, caches, weight is not None)


def ghost_batch_norm_backward(dy: np.ndarray, cache: GhostCache
                              ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(dx, dweight, dbias): per-slice batch-norm backward; the shared gamma/beta sum them."""
    return split_backward(dy, cache.splits, cache.caches, batch_norm_backward, cache.affine)


def ghost_batch_stats(cache: GhostCache) -> tuple[np.ndarray, np.ndarray]:
    """(mean, unbiased var) fed to the running average: count-weighted over virtual batches."""
    n = np.array([c.n for c in cache.caches], dtype=np.float64)
    means = np.stack([c.mean for c in cache.caches])
    unbiased = np.stack([c.var * (c.n / (c.n - 1)) for c in cache.caches])
    w = (n / n.sum())[:, None]
    return (w * means).sum(axis=0), (w * unbiased).sum(axis=0)


def ghost_running_update(running_mean: np.ndarray, running_var: np.ndarray, cache: GhostCache,
                         factor: float) -> tuple[np.ndarray, np.ndarray]:
    """One momentum update per step from the virtual batches (see the module docstring)."""
    mean, var = ghost_batch_stats(cache)
    return blend(running_mean, mean, factor), blend(running_var, var, factor)
