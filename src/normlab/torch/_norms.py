"""Which torch modules are batch norms, and which of them are ONLY a batch norm at inference.

Shared by ``fold_bn``, ``freeze_bn`` and ``bn_health``. Three kinds:

* plain -- a class whose eval forward is exactly ``F.batch_norm(x, running_mean, running_var,
  weight, bias, training=running_mean is None, ...)`` (torch's ``_BatchNorm.forward``): torch's
  BatchNorm1d/2d/3d, their Lazy forms and SyncBatchNorm (plain BN outside distributed training),
  and normlab's BatchNorm*d, SyncBatchNorm, BatchRenorm*d and GhostBatchNorm*d, whose options
  only change training. Exact classes: a SUBCLASS may add to its forward (timm's
  ``BatchNormAct2d`` applies drop-path and an activation after the normalisation);
* frozen -- a module that is a fixed per-channel affine map in any mode, with BatchNorm's
  buffers: normlab's and torchvision's ``FrozenBatchNorm2d``;
* frozen norm + act -- timm's ``FrozenBatchNormAct2d``: a frozen BN, then drop and activation;
* any other ``_BatchNorm`` subclass -- a batch norm plus whatever its forward adds.

Classes outside normlab are named, not imported: torchvision need not be installed.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..fold.rules import Norm
from .frozen import FrozenBatchNorm2d
from .ghost import GhostBatchNorm1d, GhostBatchNorm2d
from .renorm import BatchRenorm1d, BatchRenorm2d
from .running import BatchNorm1d, BatchNorm2d, BatchNorm3d
from .sync import SyncBatchNorm

# class -> (spatial dims of its input, whether that input can be (N, features)); None: unknown.
_PLAIN: dict[type, tuple[int | None, bool | None]] = {
    nn.BatchNorm1d: (1, None), nn.LazyBatchNorm1d: (1, None), BatchNorm1d: (1, None),
    BatchRenorm1d: (1, None), GhostBatchNorm1d: (1, None),
    nn.BatchNorm2d: (2, False), nn.LazyBatchNorm2d: (2, False), BatchNorm2d: (2, False),
    BatchRenorm2d: (2, False), GhostBatchNorm2d: (2, False),
    nn.BatchNorm3d: (3, False), nn.LazyBatchNorm3d: (3, False), BatchNorm3d: (3, False),
    nn.SyncBatchNorm: (None, None), SyncBatchNorm: (None, None),
}
_FROZEN_NAMES = {"torchvision.ops.misc.FrozenBatchNorm2d": (2, False)}
# frozen norm + act: forward = act(drop(x * scale + shift)), children ``drop`` and ``act``
_FROZEN_ACT_NAMES = {"timm.layers.norm_act.FrozenBatchNormAct2d"}


def _qualname(m) -> str:
    return f"{type(m).__module__}.{type(m).__qualname__}"


def is_plain_bn(m) -> bool:
    """A module whose eval forward is one batch_norm call and nothing else."""
    return type(m) in _PLAIN


def is_frozen_bn(m) -> bool:
    """A fixed per-channel affine map with BatchNorm's buffers (a frozen batch norm)."""
    return type(m) is FrozenBatchNorm2d or _qualname(m) in _FROZEN_NAMES


def is_frozen_act(m) -> bool:
    """timm's FrozenBatchNormAct2d: a frozen BN's affine map, then its ``drop`` and ``act``."""
    return _qualname(m) in _FROZEN_ACT_NAMES


def is_bn_subclass(m) -> bool:
    """A ``_BatchNorm`` whose forward may do more than normalise."""
    return isinstance(m, _BatchNorm) and not is_plain_bn(m)


def has_bn_buffers(m) -> bool:
    """A batch norm of any kind: anything but an InstanceNorm (per-sample statistics) that
    holds per-channel running statistics (timm's ``FrozenBatchNormAct2d`` too)."""
    rm = getattr(m, "running_mean", None)
    return isinstance(rm, torch.Tensor) and rm.dim() == 1 and isinstance(
        getattr(m, "running_var", None), torch.Tensor) and not isinstance(
        m, nn.modules.instancenorm._InstanceNorm)


def norm_of(m) -> Norm:
    """The fold rules' view of a plain, frozen or subclassed batch norm module."""
    if type(m) is FrozenBatchNorm2d:   # accepts any (N, C, ...) input
        dims, two_dim = None, None
    else:
        dims, two_dim = _PLAIN.get(type(m)) or _FROZEN_NAMES.get(_qualname(m)) or _by_base(m)
    return Norm(type(m).__name__, int(m.running_mean.shape[0]) if has_bn_buffers(m)
                else int(m.num_features), dims, two_dim)


def _by_base(m) -> tuple[int | None, bool | None]:
    """A subclass checks its input like the torch class it derives from (BatchNormAct2d: 4-D)."""
    for base in (nn.BatchNorm3d, nn.BatchNorm2d, nn.BatchNorm1d):
        if isinstance(m, base):
            return _PLAIN[base]
    return None, None


def stats_of(m) -> tuple:
    """(running_mean, running_var, weight, bias, eps) of a batch norm module."""
    weight = getattr(m, "weight", None)
    bias = getattr(m, "bias", None)
    if isinstance(m, _BatchNorm) and not m.affine:
        weight = bias = None
    return m.running_mean, m.running_var, weight, bias, m.eps
