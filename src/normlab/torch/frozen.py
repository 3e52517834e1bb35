"""Frozen batch norm for fine-tuning (as torchvision.ops / timm do).

A frozen BN is the inference form of Alg. 2 (Ioffe & Szegedy 2015): a per-channel multiply-add
with the running statistics, whatever the module's train/eval mode. Its weight and bias are
buffers, so no optimizer moves them; the state-dict keys are exactly ``BatchNorm2d``'s.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ._common import check_channels, per_channel


def _copy_state(src: nn.Module, dst: nn.Module, affine: bool) -> None:
    """Running statistics, batch count and (when ``affine``) gamma/beta from ``src`` to ``dst``."""
    names = ["running_mean", "running_var", "num_batches_tracked"]
    names += ["weight", "bias"] if affine else []
    with torch.no_grad():
        for name in names:
            getattr(dst, name).copy_(getattr(src, name))


class FrozenBatchNorm2d(nn.Module):
    """BN with fixed statistics and affine parameters; accepts any (N, C, ...) input."""

    def __init__(self, num_features: int, eps: float = 1e-5, device=None, dtype=None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features, **kw))
        self.register_buffer("bias", torch.zeros(num_features, **kw))
        self.register_buffer("running_mean", torch.zeros(num_features, **kw))
        self.register_buffer("running_var", torch.ones(num_features, **kw))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long,
                                                                 device=device))
        self.__dict__["_original"] = None  # the BN it replaced, kept out of the module tree

    @classmethod
    def from_bn(cls, bn: _BatchNorm) -> FrozenBatchNorm2d:
        """Freeze ``bn``: copy its statistics and affine parameters (state preserved)."""
        ref = bn.running_mean
        frozen = cls(bn.num_features, bn.eps, device=ref.device, dtype=ref.dtype)
        _copy_state(bn, frozen, affine=bn.affine)
        frozen.__dict__["_original"] = bn
        return frozen

    def scale_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Alg. 2, line 11: scale = gamma / sqrt(var + eps), shift = beta - mean * scale."""
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_channels(x, self.num_features)
        scale, shift = self.scale_shift()
        return x * per_channel(scale.to(x.dtype), x.dim()) + per_channel(shift.to(x.dtype),
                                                                         x.dim())

    def unfrozen(self, training: bool) -> _BatchNorm:
        """The trainable BN again: the one this replaced (or a new BatchNorm2d), with this
        module's current state copied in."""
        bn = self._original
        if bn is None:
            bn = nn.BatchNorm2d(self.num_features, self.eps, device=self.running_mean.device,
                                dtype=self.running_mean.dtype)
        _copy_state(self, bn, affine=bn.affine)
        return bn.train(training)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def _replace(module: nn.Module, convert, prefix: str = "") -> nn.Module:
    """Depth-first replacement: ``convert(child, path)`` returns a new module or None."""
    new = convert(module, prefix)
    if new is not None:
        return new
    for name, child in module.named_children():
        replaced = _replace(child, convert, f"{prefix}.{name}" if prefix else name)
        if replaced is not child:
            setattr(module, name, replaced)
    return module


def freeze_bn(model: nn.Module) -> nn.Module:
    """Replace every batch norm in ``model`` (in place) by a FrozenBatchNorm2d; returns the
    model (a new module only when ``model`` itself is a BN). All BNs are checked before any is
    replaced: one without running statistics cannot be frozen."""
    for name, m in model.named_modules():
        if isinstance(m, _BatchNorm) and not m.track_running_stats:
            raise ValueError(f"model: expected batch norms with running statistics to freeze, "
                             f"got {name or 'model'} with track_running_stats=False")
    return _replace(model, lambda m, _: FrozenBatchNorm2d.from_bn(m)
                    if isinstance(m, _BatchNorm) else None)


def unfreeze_bn(model: nn.Module) -> nn.Module:
    """Inverse of :func:`freeze_bn`: each FrozenBatchNorm2d becomes a trainable BN (the
    original class and options when it came from ``freeze_bn``) in the model's mode."""
    training = model.training
    return _replace(model, lambda m, _: m.unfrozen(training)
                    if isinstance(m, FrozenBatchNorm2d) else None)
