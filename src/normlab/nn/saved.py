"""What a norm layer's forward keeps for its backward: one small class per way it can run,
each with its own ``backward(dy) -> (dx, dweight, dbias)``, so a layer's backward is one call
whatever its forward did (training or eval, masked, unbatched, virtual batches, rescaled).

Plain ``__slots__`` classes: one is made per forward, and they cost less to make than
NamedTuples."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .._checks import check_grad
from ..core.caches import BatchNormCache
from ..core.shapes import channel_axes, per_channel
from ..core.stats import standardize
from ..functional import batch_norm_backward
from ..functional.ghost import split_backward


class Saved:
    """A functional training forward's cache and the functional backward that takes it."""

    __slots__ = ("grad", "cache")

    def __init__(self, grad: Callable, cache) -> None:
        self.grad = grad     # (dy, cache) -> (dx, dweight, dbias)
        self.cache = cache

    def backward(self, dy: np.ndarray):
        return self.grad(dy, self.cache)


class Eval:
    """The eval-mode map y = x * scale + shift (Alg. 2, line 11): the running statistics are
    constants of the backward, so dx = gamma * inv_std * dy."""

    __slots__ = ("x", "mean", "inv_std", "weight")

    def __init__(self, x: np.ndarray, running_mean, running_var, weight, eps: float) -> None:
        self.x = x
        self.mean = running_mean.astype(x.dtype)   # the statistics in x's dtype
        self.inv_std = (1.0 / np.sqrt(running_var.astype(np.float64) + eps)).astype(x.dtype)
        self.weight = weight

    def backward(self, dy: np.ndarray):
        dy = check_grad("dy", dy, self.x.shape)
        nd = dy.ndim
        axes = channel_axes(nd)
        inv_std = per_channel(self.inv_std, nd)
        x_hat = standardize(self.x, per_channel(self.mean, nd), inv_std)
        dbias = dy.sum(axis=axes)
        dweight = (dy * x_hat).sum(axis=axes)
        scale = inv_std if self.weight is None else inv_std * per_channel(self.weight, nd)
        dx = dy * scale
        return dx.astype(self.x.dtype, copy=False), dweight, dbias


class Scaled:
    """``unbiased='both'``: batch norm ran with gamma / sqrt(s) (see
    :meth:`normlab.functional.policy.RunningOptions._forward_affine`), so d/dgamma gains a
    factor 1/sqrt(s)."""

    __slots__ = ("cache", "s")

    def __init__(self, cache: BatchNormCache, s: float) -> None:
        self.cache, self.s = cache, s

    def backward(self, dy: np.ndarray):
        dx, dweight, dbias = batch_norm_backward(dy, self.cache)
        return dx, dweight / np.sqrt(self.s), dbias


class Masked:
    """The forward ran on the (count, C) rows of the real positions of an (N, C, T) input."""

    __slots__ = ("inner", "mask", "shape")

    def __init__(self, inner, mask: np.ndarray, shape: tuple[int, ...]) -> None:
        self.inner, self.mask, self.shape = inner, mask, shape

    def backward(self, dy: np.ndarray):
        dy = check_grad("dy", dy, self.shape)
        dx, dweight, dbias = self.inner.backward(rows(dy, self.mask))
        return scatter(dx, self.mask, self.shape), dweight, dbias


class Unbatched:
    """The forward ran on one unbatched sample as a batch of one."""

    __slots__ = ("inner", "shape")

    def __init__(self, inner, shape: tuple[int, ...]) -> None:
        self.inner, self.shape = inner, shape   # shape: the sample's own

    def backward(self, dy: np.ndarray):
        dy = check_grad("dy", dy, self.shape)[None]
        dx, dweight, dbias = self.inner.backward(dy)
        return dx[0], dweight, dbias


class Split:
    """Virtual batches, each with its own cache of ``grad``'s kind; gamma and beta are shared,
    so their gradients add up (:func:`normlab.functional.ghost.split_backward`)."""

    __slots__ = ("grad", "splits", "caches", "affine")

    def __init__(self, grad: Callable, splits: list[tuple[int, int]], caches: list,
                 affine: bool) -> None:
        self.grad, self.splits, self.caches, self.affine = grad, splits, caches, affine

    def backward(self, dy: np.ndarray):
        return split_backward(dy, self.splits, self.caches, self.grad, self.affine)


def rows(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(count, C) real positions of (N, C, T): BN of the unpadded concatenation."""
    return x.transpose(0, 2, 1)[mask]


def scatter(rows: np.ndarray, mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`rows`, zeros at the padded positions."""
    out = np.zeros((shape[0], shape[2], shape[1]), dtype=rows.dtype)
    out[mask] = rows
    return out.transpose(0, 2, 1)
