"""Frozen batch norm for fine-tuning (as torchvision.ops / timm do).

A frozen BN is the inference form of Alg. 2 (Ioffe & Szegedy 2015): a per-channel multiply-add
with the running statistics, whatever the module's train/eval mode. Its weight and bias are
buffers, so no optimizer moves them; the state-dict keys are exactly ``BatchNorm2d``'s, and a
state dict without ``num_batches_tracked`` (torchvision's FrozenBatchNorm2d, checkpoints from
torch < 0.4.1) loads as into ``BatchNorm2d``.

``freeze_bn`` replaces each plain batch norm by a :class:`FrozenBatchNorm2d`. A batch norm
SUBCLASS (timm's ``BatchNormAct2d`` adds drop-path and an activation; ``SequenceBatchNorm``
normalises the last dim) keeps its own forward: it is frozen in place (:func:`_frozen_class`),
so only its normalisation stops using batch statistics and its affine stops training.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ._common import CheckedStateMixin, check_channels, per_channel
from ._plain import is_plain_bn


def _copy_state(src: nn.Module, dst: nn.Module, affine: bool) -> None:
    """Running statistics, batch count and (when ``affine``) gamma/beta from ``src`` to ``dst``."""
    names = ["running_mean", "running_var", "num_batches_tracked"]
    names += ["weight", "bias"] if affine else []
    with torch.no_grad():
        for name in names:
            getattr(dst, name).copy_(getattr(src, name))


class FrozenBatchNorm2d(CheckedStateMixin, nn.Module):
    """BN with fixed statistics and affine parameters; accepts any (N, C, ...) input."""

    _version = 2   # as torch's _NormBase: state dicts from version 2 on have num_batches_tracked

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
        return frozen.train(bn.training)   # the model's mode is kept (fold_bn needs eval)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        """torch's ``_NormBase._load_from_state_dict``: a state dict saved before version 2 (or
        with no ``_metadata``) may lack ``num_batches_tracked``; the current value is kept."""
        version = local_metadata.get("version")
        key = prefix + "num_batches_tracked"
        if (version is None or version < 2) and key not in state_dict:
            state_dict[key] = self.num_batches_tracked
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

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
    """Freeze every batch norm in ``model`` (in place); returns the model (a new module only
    when ``model`` itself is a plain BN). A plain BN becomes a :class:`FrozenBatchNorm2d`; a BN
    subclass is frozen in place, its forward kept. All BNs are checked before any changes: one
    without running statistics cannot be frozen."""
    for name, m in model.named_modules():
        if isinstance(m, _BatchNorm) and (m.running_mean is None or m.running_var is None):
            raise ValueError(f"model: expected batch norms with running statistics to freeze, "
                             f"got {name or 'model'} with track_running_stats=False")

    def convert(m, _):
        if is_plain_bn(m):
            return FrozenBatchNorm2d.from_bn(m)
        if isinstance(m, _BatchNorm) and not isinstance(m, _FrozenInPlace):
            _freeze_in_place(m)
        return None

    return _replace(model, convert)


def unfreeze_bn(model: nn.Module) -> nn.Module:
    """Inverse of :func:`freeze_bn`: each FrozenBatchNorm2d becomes a trainable BN (the
    original class and options when it came from ``freeze_bn``) in the model's mode, and each
    BN subclass frozen in place gets its class and trainability back."""
    training = model.training

    def convert(m, _):
        if isinstance(m, FrozenBatchNorm2d):
            return m.unfrozen(training)
        if isinstance(m, _FrozenInPlace):
            _unfreeze_in_place(m, training)
        return None

    return _replace(model, convert)


# -- BN subclasses, frozen in place ------------------------------------------------------------
class _FrozenInPlace:
    """Mixed in front of a BN subclass: the module itself always reports ``training=False``,
    so its own forward normalises with the running statistics and updates nothing (torch's
    ``_BatchNorm.forward`` and the copies of it, e.g. timm's, read ``self.training``); its
    children (drop-path, activation) keep following ``train()``/``eval()``."""

    _frozen_base: type

    def train(self, mode: bool = True):
        super().train(mode)
        self.training = False
        return self

    def __reduce_ex__(self, protocol):
        # the class is made at run time: pickle the original class and rebuild it on load
        return _new_frozen, (self._frozen_base,), self.__dict__


_FROZEN_CLASSES: dict[type, type] = {}


def _frozen_class(base: type) -> type:
    """``Frozen<Base>``: ``base`` with :class:`_FrozenInPlace` in front (one per base)."""
    cls = _FROZEN_CLASSES.get(base)
    if cls is None:
        cls = type(f"Frozen{base.__name__}", (_FrozenInPlace, base),
                   {"_frozen_base": base, "__module__": __name__})
        _FROZEN_CLASSES[base] = cls
    return cls


def _new_frozen(base: type):
    """Unpickling: an empty instance of the frozen class of ``base`` (state set after)."""
    cls = _frozen_class(base)
    return cls.__new__(cls)


def _freeze_in_place(bn: _BatchNorm) -> None:
    bn.__dict__["_frozen_requires_grad"] = [p.requires_grad for p in
                                            bn.parameters(recurse=False)]
    for p in bn.parameters(recurse=False):
        p.requires_grad_(False)
    bn.__class__ = _frozen_class(type(bn))
    bn.training = False


def _unfreeze_in_place(bn: _BatchNorm, training: bool) -> None:
    bn.__class__ = bn._frozen_base
    flags = bn.__dict__.pop("_frozen_requires_grad")
    for p, flag in zip(bn.parameters(recurse=False), flags, strict=True):
        p.requires_grad_(flag)
    bn.train(training)
