"""``--arch``: which torch module a bare state dict belongs to.

A state dict holds tensors but not the layers they belong to, so ``normlab fold weights.pt
--arch NAME`` builds the module first, then loads the weights with ``strict=True``. NAME is

* ``package.module:callable``: imported (the current directory first on ``sys.path``, as uvicorn
  does for ``module:app``) and called with no arguments; it must return a ``torch.nn.Module``;
* or the BN variant of one of normlab's experiment models (:data:`ARCHITECTURES`), built from the
  same spec the experiments use (``normlab.engines.torch.build_torch``), so a state dict
  from ``--engine torch`` runs (or ``to_torch``) folds without writing any code.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from functools import reduce
from pathlib import Path

from .torch_load import load_weights_only

MNIST = (28, 28)
DIGITS = (8, 8)


def _paper_fig1(side: tuple[int, int]):
    from ..engines.spec import mlp_spec
    from ..experiments.paper_fig1 import HIDDEN

    return mlp_spec([side[0] * side[1], *HIDDEN, 10], "sigmoid", True)


def _init_scale(side: tuple[int, int]):
    from ..engines.spec import mlp_spec
    from ..experiments.init_scale import EPS, HIDDEN

    return mlp_spec([side[0] * side[1], *HIDDEN, 10], "relu", True, EPS)


def _conv_bn(side: tuple[int, int]):
    from ..runner.cnn import cnn_spec, image_shape

    return cnn_spec(image_shape(side), 10, "batch")


# name -> (what it is, spec builder, input side)
ARCHITECTURES: dict[str, tuple[str, Callable, tuple[int, int]]] = {
    "paper-fig1": ("784-100-100-100-10 sigmoid MLP with BatchNorm1d (BN paper Fig. 1)",
                   _paper_fig1, MNIST),
    "paper-fig1-digits": ("the same MLP on 8x8 digits (64 inputs)", _paper_fig1, DIGITS),
    "init-scale": ("784-100x5-10 Linear->BatchNorm1d->ReLU MLP (DLfS fig. 6-19)",
                   _init_scale, MNIST),
    "conv-bn": ("[conv3x3 -> BatchNorm2d -> ReLU -> maxpool] x2 -> Linear CNN on 14x14 "
                "(pooled MNIST) inputs", _conv_bn, MNIST),
    "conv-bn-digits": ("the same CNN on 8x8 digits", _conv_bn, DIGITS),
}


def build_module(arch: str):
    """A fresh torch module for ``arch`` (weights are whatever its constructor draws)."""
    import torch

    if not isinstance(arch, str) or not arch:
        raise ValueError(f"--arch: expected package.module:callable or one of "
                         f"{', '.join(ARCHITECTURES)}, got {arch!r}")
    if arch in ARCHITECTURES:
        import numpy as np

        from ..engines.numpy import build_numpy
        from ..engines.torch import build_torch

        _, spec_of, side = ARCHITECTURES[arch]
        spec = spec_of(side)
        # The NumPy twin only supplies a state dict with the right keys and shapes.
        init = build_numpy(spec, 0.01, np.random.default_rng(0)).state_dict()
        return build_torch(spec, init)
    module_name, colon, attr = arch.partition(":")
    if not colon or not module_name or not attr:
        raise ValueError(f"--arch: expected package.module:callable or one of "
                         f"{', '.join(ARCHITECTURES)}, got {arch!r}")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        target = reduce(getattr, attr.split("."), importlib.import_module(module_name))
    except Exception as exc:  # ImportError, AttributeError, or the module failing at import
        raise ValueError(f"--arch: expected an importable package.module:callable, got "
                         f"{arch!r} ({type(exc).__name__}: {exc})") from exc
    if not callable(target):
        raise ValueError(f"--arch: expected {arch!r} to be callable, got "
                         f"{type(target).__name__}")
    model = target()
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"--arch: expected {arch}() to return a torch.nn.Module, got "
                         f"{type(model).__name__}")
    return model


def load_with_arch(src: Path, arch: str):
    """The module ``arch`` builds with the state dict in ``src`` loaded (strict=True)."""
    import torch

    try:  # weights_only: a state dict is plain tensors, so nothing from the file runs
        state = load_weights_only(torch, src)
    except Exception as exc:
        raise ValueError(f"MODEL: expected a torch state dict file (torch.save(model."
                         f"state_dict())) with --arch, got {str(src)!r} "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
                         ) from exc
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ValueError(f"MODEL: expected a state dict (str -> Tensor) with --arch, got "
                         f"{type(state).__name__}")
    model = build_module(arch)
    _check_dtypes(state, model.state_dict())
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"MODEL: expected the state dict keys of --arch {arch} "
                         f"({len(expected)} keys), got {len(missing)} missing {missing[:5]} and "
                         f"{len(unexpected)} unexpected {unexpected[:5]}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # shapes that do not match the architecture
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise ValueError(f"MODEL: expected tensors shaped as --arch {arch} builds them, got "
                         f"{lines[-1] if lines else exc}") from exc
    return model


def _check_dtypes(state: dict, reference: dict) -> None:
    """Each tensor of a kind the architecture's own tensor has: ``load_state_dict`` casts
    silently, dropping a complex tensor's imaginary part and turning bools and ints into
    weights."""
    for key, value in state.items():
        want = reference.get(key)
        if want is None:
            continue
        if _kind(value) != _kind(want):
            raise ValueError(f"MODEL: expected {key} as a {want.dtype} tensor like the --arch "
                             f"model's (a cast would change its values), got {value.dtype}")


def _kind(tensor) -> str:
    if tensor.is_complex():
        return "complex"
    if tensor.is_floating_point():
        return "floating"
    return "bool" if str(tensor.dtype) == "torch.bool" else "integer"
