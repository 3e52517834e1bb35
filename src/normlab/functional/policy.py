"""The running-statistics policy of a batch norm, written once for both engines.

Inference normalises with population statistics the layer estimates from its training batches
(Ioffe & Szegedy 2015, Alg. 2, line 10). What a layer does with each batch's (count, mean,
biased variance) -- which estimator (:mod:`.running`), which variance is Bessel-corrected,
whether a non-finite batch is skipped and warned about once, whether the layer is frozen, which
masks it accepts -- is the same in ``normlab.nn`` (NumPy arrays) and ``normlab.torch``
(tensors). Only the arithmetic on the buffers differs; each engine supplies it as an ``_ops``
class (:class:`NumpyOps` here, ``normlab.torch._common.TorchOps``), so each keeps its own
rounding.

:class:`RunningStats` is the update every layer with running statistics uses (ghost BN, Batch
Renorm and the per-step BNs of recurrent nets inherit torch's defaults from it);
:class:`RunningOptions` adds the keyword options, their buffers and ``freeze()``.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

from .running import (
    DEFAULTS,
    exact_update,
    forward_var_scale,
    running_factor,
    running_var_target,
    stats_are_finite,
)

__all__ = ["NumpyOps", "RunningOptions", "RunningStats", "Slot", "check_mask", "freeze_all",
           "unfreeze_all"]


class Slot(NamedTuple):
    """One time step's rows of a per-step BN's buffers, as views the running update writes in
    place (the ``state`` of :meth:`RunningStats._record`)."""

    running_mean: object
    running_var: object
    num_batches_tracked: object   # a 0-d view


class NumpyOps:
    """The buffer arithmetic of the NumPy engine (0-d int64 counters, in-place writes)."""

    @staticmethod
    def blend(buf: np.ndarray, target: np.ndarray, factor: float) -> None:
        """buf <- (1 - factor) buf + factor target, rounded once to buf's dtype."""
        buf[...] = (1.0 - factor) * buf + factor * target

    @staticmethod
    def increment(counter: np.ndarray) -> None:
        counter += 1

    @staticmethod
    def set_count(counter: np.ndarray, value: int) -> None:
        counter[...] = value

    @staticmethod
    def assign(buf: np.ndarray, value: np.ndarray) -> None:
        buf[...] = value

    @staticmethod
    def widen(buf: np.ndarray, like: np.ndarray) -> np.ndarray:
        """The running statistic as ``exact`` merges it: float64, whatever the buffer's dtype."""
        return buf.astype(np.float64)

    @staticmethod
    def finite(mean: np.ndarray, var: np.ndarray) -> bool:
        return stats_are_finite(mean, var)

    @staticmethod
    def counter(like: np.ndarray) -> np.ndarray:
        return np.array(0, dtype=np.int64)

    @staticmethod
    def shrink(weight: np.ndarray | None, s: float, like: np.ndarray) -> np.ndarray:
        """gamma / sqrt(s) in gamma's dtype (ones of ``like``'s dtype when affine=False)."""
        gamma = np.ones(like.shape[1], like.dtype) if weight is None else weight
        return (gamma / np.sqrt(s)).astype(gamma.dtype)


class RunningStats:
    """Mixin: one running-statistics step of a BN layer of either engine.

    The host provides the buffers ``running_mean``, ``running_var``, ``num_batches_tracked``
    (and ``num_samples_tracked`` / ``num_batches_skipped`` where an option needs them),
    ``momentum``, ``num_features`` and ``_ops``. The class attributes are torch's behaviour.
    """

    running_stats = "ema"
    unbiased = "running"
    skip_nonfinite = False
    _warned_nonfinite = False

    def _label(self) -> str:
        return f"{type(self).__name__}({self.num_features})"

    def _record(self, mean, var, count: float | None = None, parts=None, *, state=None,
                stacklevel: int = 1) -> None:
        """Move the running estimate toward one batch (Alg. 2, line 10).

        ``count`` given: (mean, var) are one batch's mean and *biased* variance, and
        ``unbiased`` decides which variance the estimate tracks. ``count=None``: (mean, var) are
        what it tracks already (ghost BN: the count-weighted mean of the virtual batches'
        means and unbiased variances). ``parts``: the (count, mean, biased var) of every
        (virtual) batch, which ``exact`` merges one by one (default: the one batch). ``state``:
        the object holding the buffers (default the layer; one time step's slot of a
        recurrent BN). A skipped batch's warning names the frame ``stacklevel`` levels above
        this method (1: its caller).
        """
        state = self if state is None else state
        ops = self._ops
        if self.skip_nonfinite and not ops.finite(mean, var):
            self._skip(stacklevel + 1)
            return
        ops.increment(state.num_batches_tracked)
        if self.running_stats == "exact":
            self._merge_exact(state, parts or [(count, mean, var)])
            return
        factor = running_factor(self.running_stats, self.momentum, int(state.num_batches_tracked))
        ops.blend(state.running_mean, mean, factor)
        ops.blend(state.running_var,
                  var if count is None else running_var_target(var, count, self.unbiased), factor)

    def _skip(self, stacklevel: int) -> None:
        """``skip_nonfinite``: count the batch, leave the estimate alone, warn the first time
        (naming the frame ``stacklevel`` levels above this method)."""
        self._ops.increment(self.num_batches_skipped)
        if not self._warned_nonfinite:
            self._warned_nonfinite = True
            warnings.warn(f"{self._label()}: batch statistics are not finite (NaN/inf); "
                          f"running statistics left unchanged (skip_nonfinite=True). "
                          f"Further skips are counted in num_batches_skipped.",
                          RuntimeWarning, stacklevel=stacklevel + 1)

    def _merge_exact(self, state, parts) -> None:
        """``exact``: Chan-merge each (virtual) batch into the running state (see
        :func:`.running.exact_update`), in the engine's merging dtype."""
        ops = self._ops
        like = parts[0][1]
        count = float(state.num_samples_tracked)
        mean, var = ops.widen(state.running_mean, like), ops.widen(state.running_var, like)
        for n, batch_mean, batch_var in parts:
            count, mean, var = exact_update(count, mean, var, float(n), batch_mean, batch_var,
                                            self.unbiased)
        ops.set_count(state.num_samples_tracked, int(count))
        ops.assign(state.running_mean, mean)
        ops.assign(state.running_var, var)


class RunningOptions(RunningStats):
    """Mixin: the keyword options of a BN layer (``running_stats``, ``unbiased``,
    ``skip_nonfinite``), the buffers they add, ``freeze()`` and the mode rules.

    Options are validated with :func:`.running.check_options` before the layer allocates
    anything, and set with :meth:`_set_options` after its buffers exist.
    """

    frozen = False
    _OPTION_COUNTERS = ("num_samples_tracked", "num_batches_skipped")

    def _set_options(self, options: tuple[str, str, bool]) -> None:
        self.running_stats, self.unbiased, self.skip_nonfinite = options
        needed = {"num_samples_tracked": self.running_stats == "exact",
                  "num_batches_skipped": self.skip_nonfinite}
        for name in self._OPTION_COUNTERS:   # torch's state-dict order
            if self.track_running_stats and needed[name]:
                self.register_buffer(name, self._ops.counter(self.running_mean))
        self.frozen = False
        self._warned_nonfinite = False

    def _reset_option_counters(self) -> None:
        for name in self._OPTION_COUNTERS:
            counter = getattr(self, name, None)
            if counter is not None:
                self._ops.set_count(counter, 0)

    def freeze(self):
        """Inference behaviour (running statistics, no updates) until :meth:`unfreeze`, whatever
        ``train()`` says; the state dict is untouched."""
        if self.running_mean is None:
            raise ValueError(f"{self._label()}: expected track_running_stats=True to freeze, "
                             f"got track_running_stats=False (no running statistics)")
        self.frozen = True
        return self

    def unfreeze(self):
        self.frozen = False
        return self

    def _use_batch_stats(self) -> bool:
        # torch's _BatchNorm.forward: eval normalises with the running statistics whenever the
        # buffers exist, even if track_running_stats was switched off after construction
        return (self.training and not self.frozen) or self.running_mean is None

    def _tracking(self) -> bool:
        """Whether a training forward updates the running statistics (torch: only when
        tracking AND the buffers exist)."""
        return self.training and self.track_running_stats and self.running_mean is not None

    def _forward_affine(self, count: float, weight, like):
        """(weight, eps, s) the training forward normalises with.

        ``unbiased='both'`` normalises with s * (biased variance), s = m / (m - 1)
        (:func:`.running.forward_var_scale`): w (x - mu) / sqrt(s var + eps) =
        (w / sqrt(s)) (x - mu) / sqrt(var + eps / s), plain BN with a rescaled gamma and eps,
        so each engine's forward and backward are reused as they are.
        """
        s = forward_var_scale(self.unbiased, count)
        if s == 1.0:
            return weight, self.eps, s
        return self._ops.shrink(weight, s, like), self.eps / s, s

    def _option_repr(self) -> list[str]:
        return [f"{k}={getattr(self, k)!r}" for k, v in DEFAULTS.items() if getattr(self, k) != v]


def check_mask(x, mask, array_type: type, bool_dtype, what: str):
    """A padding mask of an (N, C, T) input: ``array_type`` of ``bool_dtype``, shape (N, T),
    True at real positions (``what`` names the type in the error)."""
    if x.ndim != 3:
        raise ValueError(f"mask: expected a 3D (N, C, T) input with a mask, got input shape "
                         f"{tuple(x.shape)}")
    if not isinstance(mask, array_type) or mask.dtype != bool_dtype:
        got = mask.dtype if isinstance(mask, array_type) else type(mask).__name__
        raise TypeError(f"mask: expected a {what} of shape (N, T), got {got}")
    want = (x.shape[0], x.shape[2])
    if tuple(mask.shape) != want:
        raise ValueError(f"mask: expected shape {want} (N, T), got {tuple(mask.shape)}")
    return mask


def freeze_all(model, kind: type):
    """Freeze every ``kind`` layer of ``model`` (either engine), checking all before changing any:
    a layer without running statistics has nothing to freeze to."""
    layers = [m for m in model.modules() if isinstance(m, kind)]
    for m in layers:
        if not m.track_running_stats:
            raise ValueError(f"model: expected batch norms with running statistics to freeze, "
                             f"got {m._label()} with track_running_stats=False")
    for m in layers:
        m.freeze()
    return model


def unfreeze_all(model, kind: type):
    for m in model.modules():
        if isinstance(m, kind):
            m.unfreeze()
    return model
