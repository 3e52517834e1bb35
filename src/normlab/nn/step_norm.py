"""The per-time-step normalizations of :class:`normlab.nn.recurrent.LSTM`: layer norm (Ba et al.
2016, eq. 4) and batch norm with per-step or sequence-wide statistics (Cooijmans et al. 2016,
sec. 3; Laurent et al. 2016), each a call into :mod:`normlab.functional` per step or per sequence.
"""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..functional.policy import NumpyOps, RunningStats, Slot
from .module import Module, Parameter
from .norm_base import accumulate
from .saved import Eval, Saved


class StepNorm(Module):
    """A normalization applied at every time step: ``forward_step(z, t)``/``backward_step``.

    ``forward_seq``/``backward_seq`` take a whole time-major (T, N, C) sequence; by default
    they loop over the steps. Running statistics (if any) are only written by ``commit()``,
    which the LSTM calls after its whole forward succeeded, so a failing forward changes no
    state.
    """

    def forward_step(self, z: np.ndarray, t: int):
        raise NotImplementedError

    def backward_step(self, dy: np.ndarray, cache) -> np.ndarray:
        raise NotImplementedError

    def forward_seq(self, z: np.ndarray):
        steps = [self.forward_step(z[t], t) for t in range(z.shape[0])]
        return np.stack([y for y, _ in steps]), [c for _, c in steps]

    def backward_seq(self, dy: np.ndarray, caches) -> np.ndarray:
        return np.stack([self.backward_step(dy[t], c) for t, c in enumerate(caches)])

    def begin(self) -> None:
        """Forget statistics of a forward that did not finish."""

    def commit(self) -> None:
        """Fold the statistics of the finished forward into the running estimates."""


class StepLayerNorm(StepNorm):
    """LN over the last axis (C features of one sample at one step), Ba et al. 2016 eq. 4."""

    def __init__(self, num_features: int, bias: bool, eps: float, dtype):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.weight = Parameter(np.ones(num_features, dtype=dtype))
        self.bias = Parameter(np.zeros(num_features, dtype=dtype)) if bias else None

    def forward_step(self, z: np.ndarray, t: int | None = None):
        bias = None if self.bias is None else self.bias.data
        y, cache = F.layer_norm_forward(z, (self.num_features,), self.weight.data, bias,
                                        self.eps)
        return y, Saved(F.layer_norm_backward, cache)

    # LN statistics are per sample and step, so the whole sequence is one call.
    forward_seq = forward_step

    def backward_step(self, dy: np.ndarray, saved) -> np.ndarray:
        dz, dweight, dbias = saved.backward(dy)
        accumulate(self.weight, self.bias, dweight, dbias)
        return dz

    backward_seq = backward_step

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, bias={self.bias is not None}"


class StepBatchNorm(RunningStats, StepNorm):
    """BN of (N, C) slices with running statistics in ``slots`` rows of (slots, C) buffers.

    ``per_step=True`` (Cooijmans et al. 2016, sec. 3): slot t holds the statistics of step t; the
    buffers grow to the longest sequence seen in training, a new row starting from the last
    row's estimate (what eval would have used for that step), and eval uses row min(t, T_max-1).
    ``per_step=False``: one slot shared by all steps; ``forward_seq`` normalises the (T*N, C)
    time x batch matrix at once (sequence-wise BN). ``num_batches_tracked`` counts per slot, so
    ``momentum=None`` (cumulative average) is right for steps that appear in fewer batches.
    The running update is torch's (:class:`~normlab.functional.policy.RunningStats`), per slot.
    """

    _ops = NumpyOps

    def __init__(self, num_features: int, per_step: bool, gamma: float, bias: bool, eps: float,
                 momentum: float | None, dtype):
        super().__init__()
        self.num_features = num_features
        self.per_step = per_step
        self.eps = eps
        self.momentum = momentum
        self.weight = Parameter(np.full(num_features, gamma, dtype=dtype))
        self.bias = Parameter(np.zeros(num_features, dtype=dtype)) if bias else None
        self.register_buffer("running_mean", np.zeros((1, num_features), dtype=dtype))
        self.register_buffer("running_var", np.ones((1, num_features), dtype=dtype))
        self.register_buffer("num_batches_tracked", np.zeros(1, dtype=np.int64))
        self._pending: list[tuple[int, F.BatchNormCache]] = []

    def _slot(self, t: int) -> int:
        return min(t, self.running_mean.shape[0] - 1) if self.per_step else 0

    def _slot_view(self, t: int) -> Slot:
        s = self._slot(t)
        return Slot(self.running_mean[s], self.running_var[s], self.num_batches_tracked[s, ...])

    def forward_step(self, z: np.ndarray, t: int):
        weight = self.weight.data
        bias = None if self.bias is None else self.bias.data
        if self.training:
            y, cache = F.batch_norm_train(z, weight, bias, self.eps)
            self._pending.append((t, cache))
            return y, Saved(F.batch_norm_backward, cache)
        s = self._slot(t)
        mean, var = self.running_mean[s], self.running_var[s]
        y = F.batch_norm_eval(z, mean, var, weight, bias, self.eps)
        return y, Eval(z, mean, var, weight, self.eps)

    def forward_seq(self, z: np.ndarray):
        if self.per_step:
            return super().forward_seq(z)
        y, cache = self.forward_step(z.reshape(-1, z.shape[-1]), 0)
        return y.reshape(z.shape), cache

    def backward_step(self, dy: np.ndarray, saved) -> np.ndarray:
        dz, dweight, dbias = saved.backward(dy)
        accumulate(self.weight, self.bias, dweight, dbias)
        return dz

    def backward_seq(self, dy: np.ndarray, cache) -> np.ndarray:
        if self.per_step:
            return super().backward_seq(dy, cache)
        return self.backward_step(dy.reshape(-1, dy.shape[-1]), cache).reshape(dy.shape)

    def begin(self) -> None:
        self._pending = []

    def resize(self, slots: int) -> None:
        """Grow (or shrink) the per-step buffers to ``slots`` rows; new rows copy the last."""
        rows = self.running_mean.shape[0]
        if slots == rows:
            return
        keep = min(rows, slots)
        for name, fill in (("running_mean", None), ("running_var", None),
                           ("num_batches_tracked", 0)):
            old = getattr(self, name)
            new = np.empty((slots,) + old.shape[1:], dtype=old.dtype)
            new[:keep] = old[:keep]
            new[keep:] = old[keep - 1] if fill is None else fill
            setattr(self, name, new)

    def commit(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        if self.per_step:
            self.resize(max(self.running_mean.shape[0], max(t for t, _ in pending) + 1))
        for t, cache in pending:
            self._record(cache.mean, cache.var, cache.n, state=self._slot_view(t))

    def extra_repr(self) -> str:
        return (f"{self.num_features}, per_step={self.per_step}, eps={self.eps}, "
                f"momentum={self.momentum}, bias={self.bias is not None}")


__all__ = ["StepBatchNorm", "StepLayerNorm", "StepNorm"]
