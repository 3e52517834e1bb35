"""Each implementation of a case as closures ``{"train": fwd+bwd, "eval": fwd}`` to time:
normlab on either backend, the textbook layer, and PyTorch eager."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from .. import functional as F
from ..core.families import FAMILIES
from .cases import Case
from .textbook import TextbookBatchNorm


def normlab_impl(case: Case, x: np.ndarray, dy: np.ndarray, backend: str
                 ) -> dict[str, Callable[[], object]]:
    """Training fwd+bwd and eval closures for normlab with ``NORMLAB_KERNELS=backend``."""
    c = x.shape[1]
    w, b = np.ones(c, np.float32), np.zeros(c, np.float32)
    if case.family == "batch":
        def train():
            y, cache = F.batch_norm_train(x, w, b)
            return F.batch_norm_backward(dy, cache)

        running_mean, running_var = np.zeros(c, np.float32), np.ones(c, np.float32)

        def evaluate():
            return F.batch_norm_eval(x, running_mean, running_var, w, b)
    else:
        family = FAMILIES[case.family]
        forward, backward = getattr(F, family.forward), getattr(F, family.backward)
        shape = x.shape[-1:] if family.param == "trailing" else (c,)
        w, b = np.ones(shape, np.float32), np.zeros(shape, np.float32)
        args = (x, family.groups or shape, w, *((b,) if family.bias else ()))

        def train():
            y, cache = forward(*args)
            return backward(dy, cache)

        def evaluate():
            return forward(*args)[0]
    return {"train": _with_backend(train, backend), "eval": _with_backend(evaluate, backend)}


def _with_backend(fn: Callable[[], object], backend: str) -> Callable[[], object]:
    def run():
        old = os.environ.get("NORMLAB_KERNELS")
        os.environ["NORMLAB_KERNELS"] = backend
        try:
            return fn()
        finally:
            if old is None:
                del os.environ["NORMLAB_KERNELS"]
            else:
                os.environ["NORMLAB_KERNELS"] = old
    return run


def textbook_impl(case: Case, x: np.ndarray, dy: np.ndarray) -> dict[str, Callable[[], object]]:
    d = int(np.prod(x.shape[1:]))
    layer = TextbookBatchNorm(np.ones(d, np.float32), np.zeros(d, np.float32))
    layer.forward(x, train_flg=True)

    def train():
        layer.forward(x, train_flg=True)
        return layer.backward(dy)

    return {"train": train, "eval": lambda: layer.forward(x, train_flg=False)}


def torch_impl(case: Case, x: np.ndarray, dy: np.ndarray) -> dict[str, Callable[[], object]]:
    import torch

    c = x.shape[1]
    family = FAMILIES[case.family]
    if case.family == "batch":
        layer = (torch.nn.BatchNorm1d if x.ndim == 2 else torch.nn.BatchNorm2d)(c)
    else:   # the family's torch twin: (normalized_shape) or (groups, channels)
        twin = getattr(torch.nn, next(m.name for m in family.modules if m.torch))
        layer = twin(x.shape[-1]) if family.param == "trailing" else twin(family.groups, c)
    tx = torch.from_numpy(x).requires_grad_(True)   # keeps x's strides: NHWC stays NHWC
    tdy = torch.from_numpy(dy)

    def train():
        tx.grad = None
        layer.zero_grad(set_to_none=True)
        layer.train()
        layer(tx).backward(tdy)
        return tx.grad

    def evaluate():
        layer.eval()
        with torch.no_grad():
            return layer(tx)

    return {"train": train, "eval": evaluate}


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def numba_available() -> bool:
    import importlib.util
    return importlib.util.find_spec("numba") is not None
