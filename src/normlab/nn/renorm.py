"""Batch Renormalization modules for the NumPy engine (Ioffe 2017, Alg. 1).

A thin subclass of :class:`~normlab.nn.batchnorm.BatchNormBase`: the state (gamma/beta, running
statistics, ``num_batches_tracked``) and the eval path (Alg. 2's single multiply-add with the
running statistics) are batch norm's, so state dicts move to and from ``torch.nn.BatchNorm*d`` and
``normlab.torch.BatchRenorm*d`` unchanged. Only the training step differs: the output is
corrected by the clipped r, d of :mod:`normlab.functional.renorm`, formed from the running
statistics *before* this batch updates them; r and d are constants of the backward.

``virtual_batch_size`` renormalises each virtual batch on its own (the small-minibatch setting
of Ioffe 2017, sec. 4.1, with the gradient over the whole batch), every one against the same
running statistics, which then take one ghost-BN update (:mod:`normlab.functional.ghost`).
"""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..functional.ghost import GhostCache, split_forward, virtual_splits
from ..functional.renorm import RenormSchedule, renorm_train_checked
from .batchnorm import BatchNormBase
from .saved import Saved, Split


class _BatchRenorm(BatchNormBase):
    """Batch Renorm; ``schedule`` maps the step (``num_batches_tracked``) to (r_max, d_max).

    The default schedule is the paper's (sec. 4: plain BN for 5k steps, r_max -> 3 by 40k,
    d_max -> 5 by 25k); ``r_max``/``d_max`` fix the limits from step 0 instead. Running
    statistics are always tracked: r and d are defined relative to them.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, schedule: RenormSchedule | None = None,
                 r_max: float | None = None, d_max: float | None = None, *, dtype=np.float32,
                 virtual_batch_size: int | None = None):
        if schedule is not None and (r_max is not None or d_max is not None):
            raise ValueError("schedule: expected either a schedule or fixed r_max/d_max, "
                             f"got schedule={schedule!r}, r_max={r_max!r}, d_max={d_max!r}")
        if schedule is not None and not isinstance(schedule, RenormSchedule):
            raise TypeError(f"schedule: expected a RenormSchedule, got "
                            f"{type(schedule).__name__}")
        if r_max is not None or d_max is not None:
            schedule = RenormSchedule.constant(1.0 if r_max is None else r_max,
                                               0.0 if d_max is None else d_max)
        super().__init__(num_features, eps, momentum, affine, True, dtype=dtype,
                         virtual_batch_size=virtual_batch_size)
        self.schedule = schedule or RenormSchedule()

    def limits(self) -> tuple[float, float]:
        """(r_max, d_max) for the next training step."""
        return self.schedule(int(self.num_batches_tracked))

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not self.training:
            return super().forward(x)   # Alg. 2: identical to batch norm at inference
        x = self._check_input(x, training=True)
        weight, bias = self._params()
        r_max, d_max = self.limits()
        splits = virtual_splits(len(x), self.virtual_batch_size or len(x))
        ys, caches = split_forward(x, splits, lambda part: renorm_train_checked(
            part, self.running_mean, self.running_var, weight, bias, self.eps, r_max, d_max))
        # After r, d were formed from the old running statistics (Alg. 1, last lines); a
        # skipped batch's warning names forward's caller (2 frames up)
        if len(caches) == 1:
            self._record_batch(caches[0].bn, 2)
            self._cache = Saved(F.batch_renorm_backward, caches[0])
            return ys[0]
        self._record_virtual(GhostCache(splits, [c.bn for c in caches], self.affine), 2)
        self._cache = Split(F.batch_renorm_backward, splits, caches, self.affine)
        return np.concatenate(ys, axis=0)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", schedule={self.schedule}"


class BatchRenorm1d(_BatchRenorm):
    """Input (N, C) or (N, C, L), like BatchNorm1d."""

    input_ndims = (2, 3)


class BatchRenorm2d(_BatchRenorm):
    """Input (N, C, H, W), like BatchNorm2d."""

    input_ndims = (4,)
