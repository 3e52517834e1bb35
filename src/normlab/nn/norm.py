"""The NumPy engine's normalization layers under one import path.

Each family has its own file: :mod:`.batchnorm` (BatchNorm1d/2d/3d, ``freeze``/``unfreeze``),
:mod:`.instancenorm`, :mod:`.sample_norms` (LayerNorm, GroupNorm), on the shared state of
:mod:`.norm_base` and the saved-for-backward objects of :mod:`.saved`.
"""

from . import sample_norms
from .batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d, BatchNormBase, freeze, unfreeze
from .instancenorm import InstanceNorm1d, InstanceNorm2d, InstanceNorm3d, InstanceNormBase
from .norm_base import NormBase
from .sample_norms import *  # noqa: F403 -- its __all__: a per-sample norm is listed once

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "BatchNormBase", "InstanceNorm1d",
           "InstanceNorm2d", "InstanceNorm3d", "InstanceNormBase", "NormBase", "freeze",
           "unfreeze", *sample_norms.__all__]
