"""Move models between the NumPy engine (:mod:`normlab.nn`) and torch.nn.

Both sides use torch's constructor arguments and state-dict keys (the NumPy engine keeps
torch's names on purpose), so a conversion is: build the counterpart of each layer from its
hyper-parameters, then copy the state dict across. Containers are Sequential on both sides. The
train/eval mode travels with the model, module by module (a train-mode container may hold
eval-mode layers).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn as tnn

from .. import nn as enn
from ..core.families import modules as norm_modules

_SAME_NAME = ("ReLU", "Sigmoid", "Tanh")
# the norm modules torch.nn has under the same name, with the arguments they share
_NORMS = {name: m for name, (_, m) in norm_modules().items() if m.torch}


def _norm_hyper(m, declared) -> tuple[tuple, dict]:
    """A declared norm module's constructor arguments, read off ``m`` (``bias``: has one)."""
    def read(name):
        if name == "bias":
            return m.bias is not None
        value = getattr(m, name)
        return tuple(value) if isinstance(value, (list, tuple)) else value
    return tuple(read(a) for a in declared.args), {k: read(k) for k in declared.kwargs}


def _hyper(m, kind: str) -> tuple[tuple, dict]:
    """Constructor (args, kwargs) shared by both libraries for a layer of class name ``kind``."""
    if kind == "Linear":
        return (m.in_features, m.out_features), {"bias": m.bias is not None}
    if kind == "Conv2d":
        return (m.in_channels, m.out_channels, m.kernel_size), {
            "stride": m.stride, "padding": m.padding, "dilation": m.dilation,
            "groups": m.groups, "bias": m.bias is not None}
    if kind in _NORMS:
        return _norm_hyper(m, _NORMS[kind])
    if kind == "Flatten":
        return (m.start_dim, m.end_dim), {}
    if kind == "Dropout":
        return (m.p,), {}
    if kind in ("MaxPool2d", "AvgPool2d"):
        return (m.kernel_size,), {"stride": m.stride, "padding": m.padding}
    if kind in _SAME_NAME:
        return (), {}
    raise TypeError(f"model: expected layers of {sorted(_KINDS)}, got {kind}")


_KINDS = {"Linear", "Conv2d", "Flatten", "Dropout", "MaxPool2d", "AvgPool2d", *_NORMS,
          *_SAME_NAME}


def _float_dtype_np(model: enn.Module) -> np.dtype:
    for _, p in model.named_parameters():
        return p.data.dtype
    for _, b in model.named_buffers():
        if b.dtype.kind == "f":
            return b.dtype
    return np.dtype(np.float32)


def to_torch(model: enn.Module) -> tnn.Module:
    """A torch.nn copy of a NumPy-engine model (Sequential of supported layers)."""
    dtype = torch.from_numpy(np.zeros(0, _float_dtype_np(model))).dtype
    out = _build_torch(model).to(dtype)
    out.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})
    _copy_modes(model, out)
    return out


def _build_torch(m: enn.Module) -> tnn.Module:
    if isinstance(m, enn.Sequential):
        return tnn.Sequential(*(_build_torch(c) for c in m))
    kind = type(m).__name__
    if kind not in _KINDS or not isinstance(m, getattr(enn, kind)):
        raise TypeError(f"model: expected layers of {sorted(_KINDS)}, got {kind}")
    args, kwargs = _hyper(m, kind)
    return getattr(tnn, kind)(*args, **kwargs)


def from_torch(module: tnn.Module) -> enn.Module:
    """A NumPy-engine copy of a torch.nn model (Sequential of supported layers)."""
    ref = next(iter(module.parameters()), None)
    dtype = np.float32 if ref is None else torch.empty(0, dtype=ref.dtype).numpy().dtype
    out = _build_engine(module, dtype)
    out.load_state_dict({k: v.detach().cpu().numpy() for k, v in module.state_dict().items()})
    _copy_modes(module, out)
    return out


def _copy_modes(src, dst) -> None:
    """Each module's train/eval flag from ``src`` to the module of the same name in ``dst``
    (``train()`` would set one mode for all of them)."""
    modes = {name: m.training for name, m in src.named_modules()}
    for name, m in dst.named_modules():
        object.__setattr__(m, "training", modes[name])


def _build_engine(m: tnn.Module, dtype) -> enn.Module:
    if type(m) is tnn.Sequential:
        return enn.Sequential(*(_build_engine(c, dtype) for c in m))
    kind = type(m).__name__
    if kind not in _KINDS or type(m) is not getattr(tnn, kind):
        raise TypeError(f"module: expected layers of {sorted(_KINDS)}, got {kind}")
    _check_torch_options(m, kind)
    args, kwargs = _hyper(m, kind)
    if _takes_dtype(kind):
        kwargs["dtype"] = dtype
    return getattr(enn, kind)(*args, **kwargs)


def _takes_dtype(kind: str) -> bool:
    return kind in ("Linear", "Conv2d") or (kind in _NORMS and _NORMS[kind].dtype)


# torch options the engine does not have: refuse rather than build a different model.
_TORCH_DEFAULTS = {
    "Conv2d": {"padding_mode": "zeros"},
    "MaxPool2d": {"dilation": 1, "ceil_mode": False, "return_indices": False},
    "AvgPool2d": {"ceil_mode": False, "count_include_pad": True, "divisor_override": None},
}


def _check_torch_options(m: tnn.Module, kind: str) -> None:
    for name, default in _TORCH_DEFAULTS.get(kind, {}).items():
        value = getattr(m, name)
        if value != default and not (name == "dilation" and value in ((1, 1), [1, 1])):
            raise ValueError(f"module: expected {kind} with {name}={default!r} (the NumPy "
                             f"engine has no other), got {name}={value!r}")
    if kind == "Conv2d" and isinstance(m.padding, str):
        raise ValueError(f"module: expected Conv2d with numeric padding, got {m.padding!r}")
