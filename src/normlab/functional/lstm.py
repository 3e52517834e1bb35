"""The pointwise part of one LSTM step, forward and backward, in torch's gate order (i, f, g, o).

Hochreiter & Schmidhuber 1997 with the forget gate of Gers et al. 2000, written as in the
recurrent-normalization papers (Ba et al. 2016, Layer Normalization, sec. 3.1 / eqs. 20-22;
Cooijmans et al. 2016, Recurrent Batch Normalization, eqs. 6-8)::

    (i, f, g, o) = split(pre)                     pre = [norm](W_x x_t) + [norm](W_h h_{t-1}) + b
    c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)           -- :func:`lstm_cell_forward`
    h_t = sigmoid(o) * tanh([norm](c_t))                        -- :func:`lstm_output_forward`

The matrix products and the normalizations around these two pieces live in
:class:`normlab.nn.recurrent.LSTM`, which also runs backpropagation through time; here only the
elementwise math, so that each piece can be gradient-checked on its own.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) written as 0.5 * tanh(x / 2) + 0.5: no overflow for large |x|."""
    y = np.tanh(0.5 * x)
    y *= 0.5
    y += 0.5
    return y


class GateCache(NamedTuple):
    i: np.ndarray       # input gate sigmoid(pre_i)
    f: np.ndarray       # forget gate sigmoid(pre_f)
    g: np.ndarray       # cell candidate tanh(pre_g)
    o: np.ndarray       # output gate sigmoid(pre_o)
    c_prev: np.ndarray  # c_{t-1}, the forget gate's partner in the backward


def lstm_cell_forward(pre: np.ndarray, c_prev: np.ndarray) -> tuple[np.ndarray, GateCache]:
    """c_t = f * c_{t-1} + i * g from the (N, 4H) gate pre-activations in order (i, f, g, o)."""
    h = c_prev.shape[-1]
    i = sigmoid(pre[:, :h])
    f = sigmoid(pre[:, h:2 * h])
    g = np.tanh(pre[:, 2 * h:3 * h])
    o = sigmoid(pre[:, 3 * h:])
    c = f * c_prev
    c += i * g
    return c, GateCache(i, f, g, o, c_prev)


def lstm_cell_backward(dc: np.ndarray, do: np.ndarray, cache: GateCache
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(dpre, dc_prev) given dL/dc_t (every path into c_t) and dL/do for the output gate.

    sigmoid' = s (1 - s) and tanh' = 1 - t^2 are written with the saved activations, so no
    pre-activation has to be kept.
    """
    i, f, g, o, c_prev = cache
    h = c_prev.shape[-1]
    dpre = np.empty(dc.shape[:-1] + (4 * h,), dtype=np.result_type(dc, i))
    dpre[:, :h] = dc * g * i * (1 - i)
    dpre[:, h:2 * h] = dc * c_prev * f * (1 - f)
    dpre[:, 2 * h:3 * h] = dc * i * (1 - g * g)
    dpre[:, 3 * h:] = do * o * (1 - o)
    return dpre, dc * f


def lstm_output_forward(o: np.ndarray, c_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(h_t, tanh(c_hat)) with h_t = o * tanh(c_hat); c_hat is c_t or its normalization."""
    tanh_c = np.tanh(c_hat)
    return o * tanh_c, tanh_c


def lstm_output_backward(dh: np.ndarray, o: np.ndarray, tanh_c: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
    """(do, dc_hat) of h = o * tanh(c_hat)."""
    return dh * tanh_c, dh * o * (1 - tanh_c * tanh_c)


__all__ = ["GateCache", "lstm_cell_backward", "lstm_cell_forward", "lstm_output_backward",
           "lstm_output_forward", "sigmoid"]
