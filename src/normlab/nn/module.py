"""Module, Parameter and Sequential: the NumPy engine's bookkeeping, shaped like torch.nn.

A module owns parameters (trainable arrays with a ``.grad``), buffers (state that is saved but not
trained, such as BatchNorm's running statistics) and child modules, all kept in insertion order so
``state_dict`` keys and order match PyTorch exactly ("0.weight", "1.running_mean",
"1.num_batches_tracked", ...). There is no autograd: every layer writes ``forward`` and
``backward`` out by hand, and ``backward`` ACCUMULATES parameter gradients into ``p.grad`` as
torch does (the optimizer's ``zero_grad`` resets them).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from .._checks import check_grad
from . import loading


class Parameter:
    """A trainable array: ``data`` (the value) and ``grad`` (None until a backward runs)."""

    __slots__ = ("data", "grad")

    def __init__(self, data: np.ndarray):
        if not isinstance(data, np.ndarray):
            raise TypeError(f"data: expected a numpy.ndarray, got {type(data).__name__}")
        self.data = data
        self.grad: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of ``data``."""
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        """The dtype of ``data``."""
        return self.data.dtype

    def accumulate(self, g: np.ndarray) -> None:
        """``grad += g``; the first call adopts ``g`` itself (callers pass a fresh array)."""
        if self.grad is None:
            self.grad = g.astype(self.data.dtype, copy=False)
        else:
            self.grad += g

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class Module:
    """Base class: registers Parameters, buffers and child Modules assigned as attributes.

    Attributes are stored in the instance ``__dict__`` as usual (fast access in the hot loop) and,
    in addition, their names are recorded in ordered registries that drive ``state_dict``.
    """

    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    # -- registration ----------------------------------------------------------------------
    def __setattr__(self, name: str, value) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError("call Module.__init__() before assigning attributes")
        params, buffers, modules = self._parameters, self._buffers, self._modules
        if isinstance(value, Parameter):
            buffers.pop(name, None)
            modules.pop(name, None)
            params[name] = value
        elif isinstance(value, Module):
            params.pop(name, None)
            buffers.pop(name, None)
            modules[name] = value
        elif name in buffers:
            if value is None:
                del buffers[name]
            else:
                buffers[name] = value
        else:
            # Assigning None (or anything else) to a parameter/child name unregisters it,
            # e.g. ``self.bias = None`` for bias=False layers.
            params.pop(name, None)
            modules.pop(name, None)
        object.__setattr__(self, name, value)

    def register_buffer(self, name: str, value: np.ndarray | None) -> None:
        """Non-trainable state saved in the state dict (skipped when ``value`` is None)."""
        if value is None:
            self._buffers.pop(name, None)
            object.__setattr__(self, name, None)
            return
        if not isinstance(value, np.ndarray):
            raise TypeError(f"{name}: expected a numpy.ndarray buffer, got {type(value).__name__}")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        self._buffers[name] = value
        object.__setattr__(self, name, value)

    # -- forward / backward ----------------------------------------------------------------
    def forward(self, x):
        """The layer's output for ``x``; keeps what :meth:`backward` needs (DLfS ch. 5's
        ``forward``)."""
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, dy):
        """Given dL/d(output) of the last forward, accumulate each parameter's ``grad`` and return
        dL/d(input) (DLfS ch. 5's ``backward``)."""
        raise NotImplementedError(f"{type(self).__name__}.backward")

    def _saved(self, saved):
        """``saved`` -- what the last forward kept for ``backward`` -- or, when it is None, the
        one error every layer gives for a backward that no forward preceded."""
        if saved is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return saved

    def _check_dy(self, dy, shape: tuple[int, ...] | None) -> np.ndarray:
        """The first step of every ``backward``: ``dy`` must be a float array of exactly the last
        forward output's ``shape`` (None: no forward yet), checked before any gradient or cache
        changes -- numpy would otherwise broadcast it or fail half-way with a message that does
        not name ``dy``."""
        return check_grad("dy", dy, self._saved(shape))

    def backward_params(self, dy) -> None:
        """Accumulate parameter gradients only; layers override it to skip computing dx (as
        torch skips the input gradient of a first layer whose input needs none)."""
        self.backward(dy)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- mode ------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Set training mode (``mode=True``) or eval mode on this module and every child; returns
        self."""
        if not isinstance(mode, bool):
            raise TypeError(f"mode: expected a bool, got {type(mode).__name__}")
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> Module:
        """Eval mode: ``train(False)``. BN then uses its running statistics (Ioffe & Szegedy 2015,
        Alg. 2)."""
        return self.train(False)

    # -- traversal -------------------------------------------------------------------------
    def children(self) -> Iterator[Module]:
        """The direct child modules, in the order they were assigned."""
        yield from self._modules.values()

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """``(name, module)`` for this module (name ``prefix``) and every descendant, depth first,
        with torch's dotted names."""
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator[Module]:
        """This module and every descendant, depth first."""
        for _, m in self.named_modules():
            yield m

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """``(dotted name, Parameter)`` of every parameter, as in the state dict."""
        for mod_prefix, m in self.named_modules(prefix):
            for name, p in m._parameters.items():
                yield (f"{mod_prefix}.{name}" if mod_prefix else name), p

    def parameters(self) -> list[Parameter]:
        """Every parameter, in ``named_parameters`` order (what an optimizer takes)."""
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        """``(dotted name, array)`` of every buffer (running statistics and counters)."""
        for mod_prefix, m in self.named_modules(prefix):
            for name, b in m._buffers.items():
                yield (f"{mod_prefix}.{name}" if mod_prefix else name), b

    def zero_grad(self) -> None:
        """Forget every parameter's gradient (``grad = None``)."""
        for p in self.parameters():
            p.grad = None

    # -- state dict ------------------------------------------------------------------------
    def _state_items(self, prefix: str = "") -> Iterator[tuple[str, object, str]]:
        """(key, owner, attribute) in PyTorch's order: own params, own buffers, then children."""
        for name in self._parameters:
            yield prefix + name, self, name
        for name in self._buffers:
            yield prefix + name, self, name
        for name, child in self._modules.items():
            yield from child._state_items(f"{prefix}{name}.")

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter and buffer under PyTorch's key names.

        Unlike torch (which shares storage), the arrays are copies, so a saved snapshot does not
        change when training continues.
        """
        out = {}
        for key, owner, name in self._state_items():
            value = owner._parameters.get(name)
            out[key] = (value.data if value is not None else owner._buffers[name]).copy()
        return out

    def load_state_dict(self, state_dict: Mapping[str, object], strict: bool = True) -> None:
        """Copy values into the existing arrays (dtype is kept, as torch's ``copy_`` does).

        Accepts normlab state dicts and torch ones converted with ``{k: v.numpy()}``. Every key
        and value is checked before anything is written; one error lists all missing,
        unexpected and mis-shaped keys. With ``strict=False`` missing/unexpected keys are
        ignored, shape mismatches still raise. As in torch, a norm layer's missing
        ``num_batches_tracked`` keeps its current value unless the mapping's ``_metadata``
        says it was saved with one (checkpoints from torch < 0.4.1, hand-made dicts). Beyond
        torch: a count that is NaN, fractional, negative or past int64 is refused, a masked
        array too (its mask would be ignored), and NaN/inf running statistics load with a
        warning.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict: expected a mapping of name -> array, "
                            f"got {type(state_dict).__name__}")
        bad_keys = [k for k in state_dict if not isinstance(k, str)]
        if bad_keys:
            raise TypeError(f"state_dict: expected string keys, got {bad_keys[0]!r} "
                            f"({type(bad_keys[0]).__name__})")
        items = list(self._state_items())
        targets = {key: (owner, name) for key, owner, name in items}
        metadata = getattr(state_dict, "_metadata", None) or {}
        missing = [key for key, owner, name in items if key not in state_dict and not
                   owner._may_be_missing(name, metadata.get(key[:-len(name) - 1], {}))]
        unexpected = [k for k in state_dict if k not in targets]
        values, mis_shaped = _checked_values(state_dict, targets)
        problems = []
        if strict and missing:
            problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        if mis_shaped:
            problems.append("wrong shapes: " + "; ".join(mis_shaped))
        if problems:
            raise ValueError(f"state_dict: does not match {type(self).__name__}: "
                             + " | ".join(problems))
        loading.warn_nonfinite(f"{type(self).__name__}.load_state_dict",
                               [(k, v) for k, v in values.items()
                                if targets[k][1] in loading.RUNNING_STATS])
        for key, value in values.items():
            owner, name = targets[key]
            _target_array(owner, name)[...] = value

    def _may_be_missing(self, name: str, metadata: Mapping) -> bool:
        """Whether state ``name`` of this module may be absent from a loaded state dict whose
        entry for this module is ``metadata`` (torch's per-module ``_metadata``)."""
        return False

    # -- printing --------------------------------------------------------------------------
    def extra_repr(self) -> str:
        """The arguments shown inside this module's ``repr``, torch-style."""
        return ""

    def __repr__(self) -> str:
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not self._modules:
            return head + ")"
        lines = [head]
        for name, child in self._modules.items():
            lines.append(f"  ({name}): " + repr(child).replace("\n", "\n  "))
        return "\n".join(lines) + "\n)"


def _checked_values(state_dict: Mapping, targets: dict) -> tuple[dict, list[str]]:
    """({key: array} for every key of ``targets`` that ``state_dict`` has, [wrong-shape
    messages]); a masked array, a non-numeric dtype or a bad count raises right away."""
    values, mis_shaped = {}, []
    for key, (owner, name) in targets.items():
        if key not in state_dict:
            continue
        loading.refuse_masked(key, state_dict[key])
        value = np.asarray(state_dict[key])
        target = _target_array(owner, name)
        if value.shape != target.shape:
            mis_shaped.append(f"{key}: expected shape {tuple(target.shape)}, "
                              f"got {tuple(value.shape)}")
        elif value.dtype.kind not in "biuf":
            # checked before any write: numpy would turn None into NaN, drop imaginary
            # parts, or fail on strings halfway through the copy loop of load_state_dict
            raise TypeError(f"state_dict[{key!r}]: expected a real numeric array, "
                            f"got dtype {value.dtype}")
        else:
            if target.dtype.kind in "iu":
                loading.check_count(key, value)
            elif name == "running_var":
                loading.check_variance(key, value)
            values[key] = value
    return values, mis_shaped


def _target_array(owner: Module, name: str) -> np.ndarray:
    p = owner._parameters.get(name)
    return p.data if p is not None else owner._buffers[name]


class Sequential(Module):
    """Children named "0", "1", ...; forward in order, backward in reverse."""

    def __init__(self, *layers: Module):
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"layers[{i}]: expected a normlab.nn.Module, "
                                f"got {type(layer).__name__}")
            setattr(self, str(i), layer)
        object.__setattr__(self, "_layers", list(layers))

    def forward(self, x):
        for layer in self._layers:
            x = layer.forward(x)
        return x

    def backward(self, dy, *, input_grad: bool = True):
        """Backward through the children in reverse; returns dx, or None with
        ``input_grad=False`` (then the first layer may skip computing it)."""
        layers = self._layers
        for layer in reversed(layers[1:]):
            dy = layer.backward(dy)
        if not layers:
            return dy if input_grad else None
        if input_grad:
            return layers[0].backward(dy)
        layers[0].backward_params(dy)
        return None

    def backward_params(self, dy) -> None:
        self.backward(dy, input_grad=False)

    def __len__(self) -> int:
        return len(self._layers)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._layers)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Sequential(*self._layers[index])
        return self._layers[index]

    def append(self, layer: Module) -> Sequential:
        """Add ``layer`` at the end; returns self."""
        if not isinstance(layer, Module):
            raise TypeError(f"layer: expected a normlab.nn.Module, got {type(layer).__name__}")
        setattr(self, str(len(self._layers)), layer)
        self._layers.append(layer)
        return self
