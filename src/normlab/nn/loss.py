"""Loss functions with a hand-written backward: ``loss(pred, target) -> float``,
``loss.backward() -> d loss / d pred``.
"""

from __future__ import annotations

import numpy as np

from .. import kernels
from .._checks import as_float_array
from .module import Module


class CrossEntropyLoss(Module):
    """Mean negative log-likelihood of integer labels under softmax(logits).

    log-softmax is computed stably as (z - max z) - log(sum exp(z - max z)); the gradient is
    (softmax(z) - onehot(label)) / N.
    """

    def __init__(self) -> None:
        super().__init__()
        self._cache = None

    def forward(self, logits: np.ndarray, labels: np.ndarray) -> float:
        logits = as_float_array("logits", logits)
        if logits.ndim != 2:
            raise ValueError(f"logits: expected 2D input (N, classes), got shape "
                             f"{tuple(logits.shape)}")
        labels = np.asarray(labels)
        if labels.dtype.kind not in "iu":
            raise TypeError(f"labels: expected an integer array, got {labels.dtype}")
        n, k = logits.shape
        if labels.shape != (n,):
            raise ValueError(f"labels: expected shape ({n},) to match logits, "
                             f"got {tuple(labels.shape)}")
        fast = kernels.for_array(logits, "loss") if n else None
        if fast is not None:
            probs = np.empty_like(logits)
            total, bad = fast.softmax_nll(logits, labels, probs)
            if bad >= 0:
                _bad_labels(labels, k)
            self._cache = (probs, labels)
            return float(logits.dtype.type(total / n))
        if n and (labels.min() < 0 or labels.max() >= k):
            _bad_labels(labels, k)
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        sum_exp = exp.sum(axis=1, keepdims=True)
        nll = np.log(sum_exp[:, 0]) - shifted[np.arange(n), labels]
        self._cache = (exp / sum_exp, labels)
        if n == 0 or nll.dtype == np.float16:
            return float(nll.mean())
        # nll.mean() without its Python wrapper (~4 us): the same sum / intp count, rounded to
        # the sum's dtype exactly as numpy's _mean does
        total = np.add.reduce(nll)
        return float(total.dtype.type(total / np.intp(n)))

    def backward(self, dloss: float = 1.0) -> np.ndarray:
        """d loss / d logits = (softmax(logits) - onehot(labels)) * dloss / N."""
        probs, labels = self._saved(self._cache)
        n = probs.shape[0]
        scale = probs.dtype.type(dloss / n) if n else probs.dtype.type(0)
        fast = kernels.for_array(probs, "loss")
        if fast is not None:
            grad = np.empty_like(probs)
            fast.softmax_nll_backward(probs, labels, scale, grad)
            return grad
        grad = probs.copy()
        grad[np.arange(n), labels] -= 1
        grad *= scale
        return grad


def _bad_labels(labels: np.ndarray, k: int):
    raise ValueError(f"labels: expected class indices in [0, {k}), got values in "
                     f"[{labels.min()}, {labels.max()}]")


class MSELoss(Module):
    """Mean squared error, mean over every element (torch's reduction='mean')."""

    def __init__(self) -> None:
        super().__init__()
        self._diff = None

    def forward(self, pred: np.ndarray, target: np.ndarray) -> float:
        pred = as_float_array("pred", pred)
        target = np.asarray(target)
        if target.dtype.kind not in "biuf":
            raise TypeError(f"target: expected a real numeric array, got dtype {target.dtype}")
        if target.shape != pred.shape:
            raise ValueError(f"target: expected shape {tuple(pred.shape)} (pred's), "
                             f"got {tuple(target.shape)}")
        diff = pred - target.astype(pred.dtype, copy=False)
        self._diff = diff
        return float(np.mean(np.square(diff)))

    def backward(self, dloss: float = 1.0) -> np.ndarray:
        diff = self._saved(self._diff)
        return diff * np.asarray(2.0 * dloss / diff.size, dtype=diff.dtype)
