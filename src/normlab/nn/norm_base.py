"""The state every running-statistics norm of the NumPy engine shares, with torch's names.

As ``torch.nn.modules.batchnorm._NormBase``: gamma/beta (``affine``), the running statistics
and ``num_batches_tracked`` (``track_running_stats``), with torch's defaults and dtypes, so
state dicts move between the engines. BatchNorm and InstanceNorm build on it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .._checks import check_eps, check_momentum, check_positive_int
from .module import Module, Parameter


def check_flag(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__}")
    return bool(value)


def accumulate(weight, bias, dweight, dbias) -> None:
    """Add dgamma and dbeta to the parameters' ``.grad``; a parameter that is None is skipped
    (no affine map, or a norm without beta)."""
    if weight is not None:
        weight.accumulate(dweight)
    if bias is not None:
        bias.accumulate(dbias)


class NormBase(Module):
    """State shared by BatchNorm and InstanceNorm, with torch's names, defaults and dtypes."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, *, dtype=np.float32):
        super().__init__()
        self.num_features = check_positive_int("num_features", num_features)
        self.eps = check_eps(eps)
        self.momentum = check_momentum(momentum)
        self.affine = check_flag("affine", affine)
        self.track_running_stats = check_flag("track_running_stats", track_running_stats)
        dtype = np.dtype(dtype)
        c = self.num_features
        if self.affine:
            self.weight = Parameter(np.ones(c, dtype=dtype))
            self.bias = Parameter(np.zeros(c, dtype=dtype))
        else:
            self.weight = None
            self.bias = None
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(c, dtype=dtype))
            self.register_buffer("running_var", np.ones(c, dtype=dtype))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self._cache = None

    def _may_be_missing(self, name: str, metadata) -> bool:
        """torch's ``_NormBase._load_from_state_dict``: a state dict saved before version 2 of
        the layer (torch < 0.4.1; also torchvision's FrozenBatchNorm2d, hand-made dicts: no
        ``_metadata``) has no ``num_batches_tracked``; the current value is kept."""
        version = metadata.get("version") if isinstance(metadata, Mapping) else None
        return name == "num_batches_tracked" and (version is None or version < 2)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            self.weight.data[...] = 1
            self.bias.data[...] = 0

    def _params(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        if self.affine:
            return self.weight.data, self.bias.data
        return None, None

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dx; dgamma and dbeta accumulate into ``.grad``. Whatever the forward did, the object
        it saved runs its own backward (:mod:`.saved`)."""
        dx, dweight, dbias = self._saved(self._cache).backward(dy)
        if self.affine:
            accumulate(self.weight, self.bias, dweight, dbias)
        return dx

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")
