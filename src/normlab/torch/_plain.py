"""The plain batch norms: classes whose eval forward is exactly one ``F.batch_norm`` call.

Below both :mod:`._norms` (the fold/health view of every kind of BN) and :mod:`.frozen`
(``freeze_bn`` replaces a plain BN by a frozen one), so neither needs the other to ask.
"""

from __future__ import annotations

from torch import nn

from .ghost import GhostBatchNorm1d, GhostBatchNorm2d
from .renorm import BatchRenorm1d, BatchRenorm2d
from .running import BatchNorm1d, BatchNorm2d, BatchNorm3d
from .sync import SyncBatchNorm

__all__ = ["PLAIN", "is_plain_bn"]

# class -> (spatial dims of its input, whether that input can be (N, features)); None: unknown.
PLAIN: dict[type, tuple[int | None, bool | None]] = {
    nn.BatchNorm1d: (1, None), nn.LazyBatchNorm1d: (1, None), BatchNorm1d: (1, None),
    BatchRenorm1d: (1, None), GhostBatchNorm1d: (1, None),
    nn.BatchNorm2d: (2, False), nn.LazyBatchNorm2d: (2, False), BatchNorm2d: (2, False),
    BatchRenorm2d: (2, False), GhostBatchNorm2d: (2, False),
    nn.BatchNorm3d: (3, False), nn.LazyBatchNorm3d: (3, False), BatchNorm3d: (3, False),
    nn.SyncBatchNorm: (None, None), SyncBatchNorm: (None, None),
}


def is_plain_bn(m) -> bool:
    """A module whose eval forward is one batch_norm call and nothing else."""
    return type(m) in PLAIN
