"""Each implementation of a case as closures ``{"train": fwd+bwd, "eval": fwd}`` to time:
normlab on either backend, the textbook layer, and PyTorch eager."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from .. import functional as F
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
    elif case.family == "layer":
        d = x.shape[-1:]
        w, b = np.ones(d, np.float32), np.zeros(d, np.float32)

        def train():
            y, cache = F.layer_norm_forward(x, d, w, b)
            return F.layer_norm_backward(dy, cache)

        def evaluate():
            return F.layer_norm_forward(x, d, w, b)[0]
    else:
        def train():
            y, cache = F.group_norm_forward(x, 32, w, b)
            return F.group_norm_backward(dy, cache)

        def evaluate():
            return F.group_norm_forward(x, 32, w, b)[0]
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
    if case.family == "batch":
        layer = (torch.nn.BatchNorm1d if x.ndim == 2 else torch.nn.BatchNorm2d)(c)
    elif case.family == "layer":
        layer = torch.nn.LayerNorm(x.shape[-1])
    else:
        layer = torch.nn.GroupNorm(32, c)
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
