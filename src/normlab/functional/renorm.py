"""Batch Renormalization (Ioffe 2017, "Batch Renormalization: Towards Reducing Minibatch
Dependence in Batch-Normalized Models").

Training (Alg. 1):  r = clip(sigma_B / sigma, 1/r_max, r_max),  d = clip((mu_B - mu) / sigma,
-d_max, d_max),  y = gamma * (x_hat * r + d) + beta, where x_hat uses the batch statistics and
(mu, sigma) are the running ones. r and d are *constants* in the backward (stop_gradient in the
paper), so the training forward is batch norm with a per-channel effective affine map
``gamma * r`` and ``gamma * d + beta``: both the forward and the backward reuse
:mod:`normlab.functional.batch` with that map instead of re-deriving the normalisation.

Conventions (PyTorch's, so the state moves to ``torch.nn.BatchNorm*d``): sigma_B =
sqrt(biased batch var + eps), sigma = sqrt(running_var + eps); the running statistics are updated
exactly as batch norm's, *after* r and d were formed from the old ones (Alg. 1, last lines).
With r_max = 1 and d_max = 0 the layer is batch norm.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .._checks import check_param
from .batch import (
    BatchNormCache,
    batch_norm_backward,
    check_count,
    check_input,
    per_channel,
    train_checked,
)


@dataclass(frozen=True)
class RenormSchedule:
    """(r_max, d_max) as a pure function of the training step (Ioffe 2017, sec. 4).

    The paper's schedule: r_max = 1, d_max = 0 (plain batch norm) for the first ``warmup``
    steps, then linear ramps reaching ``r_max`` at step ``r_max_at`` and ``d_max`` at step
    ``d_max_at``. ``RenormSchedule.constant(r, d)`` fixes the limits from step 0.
    """

    r_max: float = 3.0
    d_max: float = 5.0
    warmup: int = 5_000
    r_max_at: int = 40_000
    d_max_at: int = 25_000

    def __post_init__(self) -> None:
        if not (isinstance(self.r_max, numbers.Real) and self.r_max >= 1):
            raise ValueError(f"r_max: expected a number >= 1, got {self.r_max!r}")
        if not (isinstance(self.d_max, numbers.Real) and self.d_max >= 0):
            raise ValueError(f"d_max: expected a number >= 0, got {self.d_max!r}")
        for name in ("warmup", "r_max_at", "d_max_at"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name}: expected a non-negative integer step, got {v!r}")
        for name in ("r_max_at", "d_max_at"):
            if getattr(self, name) < self.warmup:
                raise ValueError(f"{name}: expected a step >= warmup ({self.warmup}), "
                                 f"got {getattr(self, name)}")

    @classmethod
    def constant(cls, r_max: float, d_max: float) -> RenormSchedule:
        """No warm-up: the clips r_max and d_max from the first step on."""
        return cls(r_max=r_max, d_max=d_max, warmup=0, r_max_at=0, d_max_at=0)

    def __call__(self, step: int) -> tuple[float, float]:
        return (_ramp(step, self.warmup, self.r_max_at, 1.0, self.r_max),
                _ramp(step, self.warmup, self.d_max_at, 0.0, self.d_max))


def _ramp(step: int, start: int, end: int, low: float, high: float) -> float:
    """``low`` before ``start``, ``high`` from ``end`` on, linear in between."""
    if step < start:
        return float(low)
    if step >= end:
        return float(high)
    return low + (high - low) * (step - start) / (end - start)


class RenormCache(NamedTuple):
    bn: BatchNormCache   # batch-norm cache whose ``weight`` is the effective gamma * r
    r: np.ndarray        # (C,) clipped sigma_B / sigma, a constant of the backward
    d: np.ndarray        # (C,) clipped (mu_B - mu) / sigma, a constant of the backward
    affine: bool


def renorm_correction(mean: np.ndarray, var: np.ndarray, running_mean: np.ndarray,
                      running_var: np.ndarray, eps: float, r_max: float, d_max: float
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The clipped (r, d) of Alg. 1 from batch (mean, biased var) and the running statistics."""
    if not r_max >= 1:
        raise ValueError(f"r_max: expected a number >= 1, got {r_max!r}")
    if not d_max >= 0:
        raise ValueError(f"d_max: expected a number >= 0, got {d_max!r}")
    sigma = np.sqrt(running_var.astype(np.float64) + eps)
    r = np.sqrt(var.astype(np.float64) + eps) / sigma
    d = (mean - running_mean) / sigma
    return np.clip(r, 1.0 / r_max, r_max), np.clip(d, -d_max, d_max)


def batch_renorm_train(x: np.ndarray, running_mean: np.ndarray, running_var: np.ndarray,
                       weight: np.ndarray | None = None, bias: np.ndarray | None = None,
                       eps: float = 1e-5, r_max: float = 1.0, d_max: float = 0.0
                       ) -> tuple[np.ndarray, RenormCache]:
    """Training forward of Alg. 1; the running statistics are read, not updated.

    Update them afterwards with ``update_running_stats(running_mean, running_var, cache.bn,
    factor)``, as for batch norm.
    """
    x = check_input(x, running_mean.shape[0])   # the count: renorm_train_checked's
    return renorm_train_checked(x, running_mean, running_var, weight, bias, eps, r_max, d_max)


def renorm_train_checked(x: np.ndarray, running_mean: np.ndarray, running_var: np.ndarray,
                         weight: np.ndarray | None, bias: np.ndarray | None, eps: float,
                         r_max: float, d_max: float) -> tuple[np.ndarray, RenormCache]:
    """:func:`batch_renorm_train` of an ``x`` its caller has checked
    (:func:`~.batch.check_input`, against the running statistics' channels); a virtual batch
    of it still needs a batch variance."""
    check_count(x.shape)
    channels = running_mean.shape
    for name, p in (("running_var", running_var), ("weight", weight), ("bias", bias)):
        check_param(name, p, channels)
    _, bn = train_checked(x, None, None, eps)  # validates eps; affine-free
    r, d = renorm_correction(bn.mean, bn.var, running_mean, running_var, eps, r_max, d_max)
    gamma = np.ones_like(r) if weight is None else weight
    x_hat = bn.x_hat   # a property that recomputes x_hat from x on the kernel path: once
    scale = (gamma * r).astype(x_hat.dtype)
    shift = gamma * d + (0.0 if bias is None else bias)
    y = x_hat * per_channel(scale, x.ndim)
    y += per_channel(shift.astype(x_hat.dtype), x.ndim)
    cache = RenormCache(bn._replace(weight=scale), r, d, weight is not None)
    return y.astype(x.dtype, copy=False), cache


def batch_renorm_backward(dy: np.ndarray, cache: RenormCache
                          ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(dx, dweight, dbias) with r and d held constant (the paper's stop_gradient).

    dx is batch norm's backward with gamma replaced by gamma * r; since
    y = gamma * (x_hat * r + d) + beta, dgamma = r * sum(dy * x_hat) + d * sum(dy).
    """
    dx, dgamma_hat, dbeta = batch_norm_backward(dy, cache.bn)
    if not cache.affine:
        return dx, None, None
    return dx, cache.r * dgamma_hat + cache.d * dbeta, dbeta


__all__ = ["RenormCache", "RenormSchedule", "batch_renorm_backward", "batch_renorm_train",
           "renorm_correction", "renorm_train_checked"]
