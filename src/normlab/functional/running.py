"""Running-statistic estimators beyond PyTorch's exponential average.

Batch norm's inference statistics are an estimate of the population mean and variance of each
channel (Ioffe & Szegedy 2015, Alg. 2, line 10). PyTorch keeps an exponential moving average
(``ema``) or, with ``momentum=None``, a cumulative average of per-batch statistics. This module
adds the estimators users keep asking for, each a pure function of the previous state and the new
batch's (count, mean, biased variance):

* ``ema_debiased`` -- the EMA with Adam's bias correction (Kingma & Ba 2015, sec. 3). Started
  from zero, the EMA after t batches is biased by the factor 1 - (1 - m)^t; dividing it out is
  the same as using the averaging factor m / (1 - (1 - m)^t) on the corrected estimate, so no
  extra buffer is needed (t = num_batches_tracked). The first batch is taken exactly.
* ``exact`` -- the mean and variance of *every* activation seen since the last reset, merged
  batch by batch with Chan, Golub & LeVeque's parallel formula (1979). It is independent of how
  the data were split into batches and of their order.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ..core.shapes import compute_dtype

RUNNING_STATS = ("ema", "cumulative", "exact", "ema_debiased")
UNBIASED = ("running", "both", "none")
DEFAULTS = {"running_stats": "ema", "unbiased": "running", "skip_nonfinite": False}


def check_options(running_stats, unbiased, skip_nonfinite, momentum) -> tuple[str, str, bool]:
    """Validate the running-statistics options of a BN layer (ValueError/TypeError naming the
    argument, before the layer allocates anything). ``ema_debiased`` needs a numeric momentum:
    with ``momentum=None`` the cumulative average is already unbiased."""
    if not isinstance(running_stats, str) or running_stats not in RUNNING_STATS:
        raise ValueError(f"running_stats: expected one of {', '.join(RUNNING_STATS)}, "
                         f"got {running_stats!r}")
    if not isinstance(unbiased, str) or unbiased not in UNBIASED:
        raise ValueError(f"unbiased: expected one of {', '.join(UNBIASED)}, got {unbiased!r}")
    if not isinstance(skip_nonfinite, (bool, np.bool_)):
        raise TypeError(f"skip_nonfinite: expected a bool, got {type(skip_nonfinite).__name__}")
    if running_stats == "ema_debiased" and not isinstance(momentum, numbers.Real):
        raise ValueError(f"momentum: expected a number in [0, 1] with "
                         f"running_stats='ema_debiased', got {momentum!r}")
    return running_stats, unbiased, bool(skip_nonfinite)


def averaging_factor(momentum: float | None, num_batches_tracked: int) -> float:
    """Weight of the new batch in the running average.

    ``momentum`` follows PyTorch: running = (1 - momentum) * running + momentum * batch (the
    opposite convention of the textbook's and Keras' 0.9/0.99 "decay"). ``None`` gives the
    cumulative moving average 1/k, where k counts batches including the current one.
    """
    return 1.0 / num_batches_tracked if momentum is None else momentum


def running_factor(running_stats: str, momentum: float | None, t: int) -> float:
    """Weight of the t-th batch (t counts it) in the running average, for the averaging modes.

    ``ema``: torch's momentum (``None`` = cumulative); ``cumulative``: 1/t whatever the
    momentum; ``ema_debiased``: :func:`debiased_factor`. ``exact`` merges instead (see
    :func:`exact_update`).
    """
    if running_stats == "ema":
        return averaging_factor(momentum, t)
    if running_stats == "cumulative":
        return averaging_factor(None, t)
    if running_stats == "ema_debiased":
        return debiased_factor(momentum, t)
    raise ValueError(f"running_stats: expected an averaging mode (ema, cumulative, "
                     f"ema_debiased), got {running_stats!r}")


def blend(running, value, factor: float):
    """running <- (1 - factor) running + factor value, in the running estimate's dtype: the one
    averaging step of every NumPy running estimate (batch, ghost, instance norm)."""
    return ((1.0 - factor) * running + factor * value).astype(running.dtype)


def forward_var_scale(unbiased: str, count: float) -> float:
    """s such that the forward normalises with s * (biased batch variance).

    ``running`` and ``none``: s = 1 (Alg. 1, line 3, as the paper and PyTorch do); ``both``:
    s = m / (m - 1), the unbiased variance in the forward too.
    """
    return count / (count - 1) if unbiased == "both" and count > 1 else 1.0


def running_var_target(var, count: float, unbiased: str):
    """The batch variance the running estimate tracks: unbiased (Alg. 2, line 10) unless
    ``unbiased='none'``, where it is the biased one the forward used."""
    return var if unbiased == "none" else bessel(var, count)


def exact_update(count: float, running_mean, running_var, batch_count: float, mean, var,
                 unbiased: str):
    """``exact`` mode: merge one batch's (count, mean, biased var) into the running state.

    The running state is stored as torch stores it (running_var Bessel-corrected unless
    ``unbiased='none'``), so the biased M2 is recovered first; returns (count, running_mean,
    running_var). Works on NumPy arrays and torch tensors alike.
    """
    biased = running_var if unbiased == "none" or count <= 1 else running_var * (
        (count - 1) / count)
    count, mean, var = chan_merge(count, running_mean, biased, batch_count, mean, var)
    return count, mean, running_var_target(var, count, unbiased)


def debiased_factor(momentum: float, t: int) -> float:
    """Averaging factor that makes an EMA bias-corrected: m / (1 - (1 - m)^t).

    The denominator is formed with expm1/log1p so that small momenta keep their digits; the
    factor is clipped to 1 so the first batch is taken exactly. Momentum 0 never updates.
    """
    if momentum == 0:
        return 0.0
    return min(1.0, momentum / -math.expm1(t * math.log1p(-momentum)))


def chan_merge(count_a: float, mean_a: np.ndarray, var_a: np.ndarray,
               count_b: float, mean_b: np.ndarray, var_b: np.ndarray
               ) -> tuple[float, np.ndarray, np.ndarray]:
    """Merge two (count, mean, biased variance) summaries into that of their union.

    Chan et al.: with delta = mean_b - mean_a and n = n_a + n_b,
    mean = mean_a + delta * n_b / n and M2 = M2_a + M2_b + delta^2 * n_a * n_b / n, where
    M2 = count * biased variance. No sums of squares are formed, so nothing cancels.
    """
    count = count_a + count_b
    if count_a == 0:
        # "* 1.0" rather than .copy(): a fresh array for NumPy and torch alike (the torch
        # modules reuse this merge on tensors)
        return count_b, mean_b * 1.0, var_b * 1.0
    delta = mean_b - mean_a
    mean = mean_a + delta * (count_b / count)
    m2 = var_a * count_a + var_b * count_b + delta * delta * (count_a * count_b / count)
    return count, mean, m2 / count


def bessel(var: np.ndarray, count: float) -> np.ndarray:
    """Biased -> unbiased variance, count / (count - 1) (Alg. 2, line 10)."""
    return var * (count / (count - 1)) if count > 1 else var


def stats_are_finite(mean: np.ndarray, var: np.ndarray) -> bool:
    """False when a batch's statistics hold NaN/inf (e.g. after an fp16 overflow)."""
    return bool(np.isfinite(mean).all() and np.isfinite(var).all())


def masked_moments(x: np.ndarray, mask: np.ndarray, channel_axis: int
                   ) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-channel (mean, biased var, count) of the positions where ``mask`` is true.

    ``x`` is (N, T, C) with channel_axis=2 or (N, C, T) with channel_axis=1; ``mask`` is (N, T)
    with True at real (unpadded) positions. Padded positions contribute nothing, so the result
    equals the moments of the concatenation of the unpadded sequences. Two-pass, in the compute
    dtype.
    """
    acc = compute_dtype(x.dtype)
    m = np.expand_dims(mask.astype(acc), channel_axis)
    axes = tuple(a for a in range(x.ndim) if a != channel_axis)
    count = float(mask.sum())
    mean = (x * m).sum(axis=axes, dtype=acc) / count
    shape = [1] * x.ndim
    shape[channel_axis] = -1
    centered = (x - mean.reshape(shape)) * m
    var = np.square(centered).sum(axis=axes) / count
    return mean, var, count
