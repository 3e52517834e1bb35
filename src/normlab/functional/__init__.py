"""The normalisation API: pure functions, one file per family, over two backends.

Each call validates its arguments and hands them to the backend :mod:`.backend` chooses (the
numba kernels or the NumPy reference); ghost BN, Batch Renorm and the running-statistic
estimators are compositions on top. No state, no classes beyond the caches the backward passes
need (:mod:`normlab.core.caches`).
"""

from ..core.stats import moments, normalize, normalize_backward
from .batch import (
    BatchNormCache,
    averaging_factor,
    batch_norm_backward,
    batch_norm_eval,
    batch_norm_train,
    eval_scale_shift,
    update_running_stats,
)
from .ghost import (
    ghost_batch_norm_backward,
    ghost_batch_norm_train,
    ghost_running_update,
    virtual_splits,
)
from .group import (
    group_norm_backward,
    group_norm_forward,
    instance_norm_backward,
    instance_norm_forward,
    instance_running_update,
)
from .layer import layer_norm_backward, layer_norm_forward, rms_norm_backward, rms_norm_forward
from .renorm import RenormSchedule, batch_renorm_backward, batch_renorm_train

__all__ = [
    "BatchNormCache", "averaging_factor", "batch_norm_backward", "batch_norm_eval",
    "batch_norm_train", "eval_scale_shift", "update_running_stats", "group_norm_backward",
    "group_norm_forward", "instance_norm_backward", "instance_norm_forward",
    "instance_running_update", "layer_norm_backward", "layer_norm_forward", "moments",
    "rms_norm_backward", "rms_norm_forward",
    "normalize", "normalize_backward",
    "ghost_batch_norm_backward", "ghost_batch_norm_train", "ghost_running_update",
    "virtual_splits", "RenormSchedule", "batch_renorm_backward", "batch_renorm_train",
]
