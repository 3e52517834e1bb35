"""``count_bn_ops``: the batch norm calls a model makes, counted while it runs."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .. import _norms
from .trace import _BN_ARGS, _bn_args


# -- counting what runs ------------------------------------------------------------------------
class _CountBatchNorm(torch.overrides.TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _BN_ARGS and _bn_args(func, args, kwargs)["running_mean"] is not None:
            self.count += 1
        return func(*args, **kwargs)


@torch.no_grad()
def count_bn_ops(model: nn.Module, *inputs) -> int:
    """How many batch norm operations one forward of ``model`` on ``inputs`` runs: calls of
    ``batch_norm`` with running statistics (BN layers, and BN code inside other layers'
    forwards) plus calls of frozen BN layers (any module with BatchNorm's running statistics
    that is no ``_BatchNorm``: FrozenBatchNorm2d, timm's FrozenBatchNormAct2d). After
    ``fold_bn`` it equals the number of operations the report lists as not folded."""
    frozen = [0]

    def hook(m, _inputs, _output):
        frozen[0] += 1

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if _norms.has_bn_buffers(m) and not isinstance(m, _BatchNorm)]
    counter = _CountBatchNorm()
    try:
        with counter:
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return counter.count + frozen[0]
