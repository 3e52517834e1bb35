"""Softmax cross-entropy in one pass per row: the NumPy engine's loss, fused.

The NumPy formulation takes ten array calls for a (60, 10) batch (~20 us, as much as a
BatchNorm1d forward); one compiled loop takes ~2 us. Same math as
:class:`normlab.nn.CrossEntropyLoss`: log-softmax as (z - max z) - log(sum exp(z - max z)),
accumulated in float64.
"""

from __future__ import annotations

import numpy as np

from ._jit import jit


@jit
def softmax_nll(logits, labels, probs):
    """Fill ``probs`` with softmax(logits) and return (sum of -log p[label], first bad row).

    The bad row is the first whose label is outside [0, classes), or -1; the caller raises
    before using anything else (``probs`` is then only partly written).
    """
    n, k = logits.shape
    total = 0.0
    for i in range(n):
        label = labels[i]
        if label < 0 or label >= k:
            return 0.0, i
        row = logits[i]
        top = row[0]
        for j in range(1, k):
            top = max(top, row[j])
        sum_exp = 0.0
        out = probs[i]
        for j in range(k):
            e = np.exp(float(row[j]) - float(top))
            out[j] = e
            sum_exp += e
        for j in range(k):
            out[j] = out[j] / sum_exp
        total += np.log(sum_exp) - (float(row[label]) - float(top))
    return total, -1


@jit
def softmax_nll_backward(probs, labels, scale, grad):
    """grad = (probs - onehot(labels)) * scale."""
    n, k = probs.shape
    for i in range(n):
        for j in range(k):
            grad[i, j] = probs[i, j] * scale
        grad[i, labels[i]] -= scale
