"""Pure normalisation math: no state, no classes beyond the caches the backward passes need."""

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
from .layer import layer_norm_backward, layer_norm_forward
from .renorm import RenormSchedule, batch_renorm_backward, batch_renorm_train
from .stats import moments, normalize, normalize_backward

__all__ = [
    "BatchNormCache", "averaging_factor", "batch_norm_backward", "batch_norm_eval",
    "batch_norm_train", "eval_scale_shift", "update_running_stats", "group_norm_backward",
    "group_norm_forward", "instance_norm_backward", "instance_norm_forward",
    "instance_running_update", "layer_norm_backward", "layer_norm_forward", "moments",
    "normalize", "normalize_backward",
    "ghost_batch_norm_backward", "ghost_batch_norm_train", "ghost_running_update",
    "virtual_splits", "RenormSchedule", "batch_renorm_backward", "batch_renorm_train",
]
