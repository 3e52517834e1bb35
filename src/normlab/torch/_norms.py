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
from ._plain import PLAIN, is_plain_bn
from .frozen import FrozenBatchNorm2d

_FROZEN_NAMES = {"torchvision.ops.misc.FrozenBatchNorm2d": (2, False)}
# frozen norm + act: forward = act(drop(x * scale + shift)), children ``drop`` and ``act``
_FROZEN_ACT_NAMES = {"timm.layers.norm_act.FrozenBatchNormAct2d"}


def _qualname(m) -> str:
    return f"{type(m).__module__}.{type(m).__qualname__}"


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
        dims, two_dim = PLAIN.get(type(m)) or _FROZEN_NAMES.get(_qualname(m)) or _by_base(m)
    return Norm(type(m).__name__, int(m.running_mean.shape[0]) if has_bn_buffers(m)
                else int(m.num_features), dims, two_dim)


def _by_base(m) -> tuple[int | None, bool | None]:
    """A subclass checks its input like the torch class it derives from (BatchNormAct2d: 4-D)."""
    for base in (nn.BatchNorm3d, nn.BatchNorm2d, nn.BatchNorm1d):
        if isinstance(m, base):
            return PLAIN[base]
    return None, None


def stats_of(m) -> tuple:
    """(running_mean, running_var, weight, bias, eps) of a batch norm module."""
    weight = getattr(m, "weight", None)
    bias = getattr(m, "bias", None)
    if isinstance(m, _BatchNorm) and not m.affine:
        weight = bias = None
    return m.running_mean, m.running_var, weight, bias, m.eps
