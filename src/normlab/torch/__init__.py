"""PyTorch extras: the normalisation tools torch.nn lacks, as drop-in ``nn.Module`` subclasses.

Importing this package imports torch (the optional extra ``normlab[torch]``); ``import normlab``
never does. Every module keeps torch's argument names (``num_features``, ``eps``, ``momentum``,
``affine``, ``track_running_stats``) and, with default options, the state-dict keys of
``torch.nn.BatchNorm*d`` so checkpoints move both ways.
"""

from __future__ import annotations

try:
    import torch as _torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError("normlab.torch needs PyTorch: pip install 'normlab[torch]'") from exc

from .convert import from_torch, to_torch
from .device import deterministic, resolve_device
from .fold import count_bn_ops
from .fold import fold_bn as fold_bn  # returns (model, FoldReport); see normlab.torch.fold
from .fold_export import fold_bn_export
from .frozen import FrozenBatchNorm2d, freeze_bn, unfreeze_bn
from .ghost import GhostBatchNorm1d, GhostBatchNorm2d
from .health import BNHealthReport, bn_health
from .lstm import NormLSTM
from .recalibrate import recalibrate_bn
from .renorm import BatchRenorm1d, BatchRenorm2d
from .running import BatchNorm1d, BatchNorm2d, BatchNorm3d, freeze, unfreeze
from .sequence import RecurrentBatchNorm, SequenceBatchNorm
from .sync import SyncBatchNorm, convert_sync_batchnorm

__all__ = [
    "BNHealthReport", "BatchRenorm1d", "BatchRenorm2d", "FrozenBatchNorm2d",
    "GhostBatchNorm1d", "deterministic", "resolve_device",
    "GhostBatchNorm2d", "NormLSTM", "RecurrentBatchNorm", "SequenceBatchNorm", "SyncBatchNorm",
    "bn_health", "convert_sync_batchnorm", "count_bn_ops", "fold_bn", "fold_bn_export", "freeze_bn",
    "from_torch", "recalibrate_bn",
    "to_torch", "unfreeze_bn",
    "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "freeze", "unfreeze",
]
