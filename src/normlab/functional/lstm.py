"""The pointwise part of one LSTM step, forward and backward, in torch's gate order (i, f, g, o).

Hochreiter & Schmidhuber 1997 with the forget gate of Gers et al. 2000, written as in the
recurrent-normalization papers (Ba et al. 2016, Layer Normalization, sec. 3.1 / eqs. 20-22;
Cooijmans et al. 2016, Recurrent Batch Normalization, eqs. 6-8)::

    (i, f, g, o) = split(pre)                     pre = [norm](W_x x_t) + [norm](W_h h_{t-1}) + b
    c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)           -- :func:`lstm_cell_forward`
    h_t = sigmoid(o) * tanh([norm](c_t))                        -- :func:`lstm_output_forward`

:func:`lstm_forward_steps` and :func:`lstm_backward_steps` run these pieces over time (the
recurrent matrix product, the optional per-step norms, backpropagation through time) on
time-major (T, N, .) arrays; :class:`normlab.nn.recurrent.LSTM` does the input projection and
its norm around them. :mod:`normlab.kernels.lstm` is the fast twin of the two loops (same
signatures), checked against them in tests/kernels/test_lstm_kernels.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

# A per-step norm: forward (z, t) -> (normalised z, its cache); backward (dy, cache) -> dz.
StepForward = Callable[[np.ndarray, int], tuple[np.ndarray, object]]
StepBackward = Callable[[np.ndarray, object], np.ndarray]


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


class Step(NamedTuple):
    h_prev: np.ndarray
    gates: GateCache
    tanh_c: np.ndarray
    norm_h: object    # cache of the recurrent norm at this step (None without it)
    norm_c: object    # cache of the cell norm at this step (None without it)


def lstm_forward_steps(a_x: np.ndarray, w_hh: np.ndarray, b: np.ndarray, h: np.ndarray,
                       c: np.ndarray, norm_hh: StepForward | None = None,
                       norm_c: StepForward | None = None
                       ) -> tuple[np.ndarray, np.ndarray, list[Step]]:
    """(hidden states (T, N, H), c_T, per-step caches) from the input pre-activations a_x
    (T, N, 4H) (already normalised if that norm is on), h_0 and c_0 (N, H)::

        a_h = [norm_hh](W_hh h_{t-1});  pre = a_x[t] + a_h + b;  c_t = f c_{t-1} + i g
        h_t = o * tanh([norm_c](c_t))
    """
    steps = a_x.shape[0]
    out = np.empty((steps, *h.shape), dtype=np.result_type(a_x, h))
    cache = []
    for t in range(steps):
        a_h, norm_h = h @ w_hh.T, None
        if norm_hh is not None:
            a_h, norm_h = norm_hh(a_h, t)
        pre = a_x[t] + a_h
        pre += b
        c_next, gates = lstm_cell_forward(pre, c)
        c_hat, cache_c = c_next, None
        if norm_c is not None:
            c_hat, cache_c = norm_c(c_next, t)
        h_next, tanh_c = lstm_output_forward(gates.o, c_hat)
        cache.append(Step(h, gates, tanh_c, norm_h, cache_c))
        out[t] = h_next
        h, c = h_next, c_next
    return out, c, cache


def lstm_backward_steps(d_out: np.ndarray | None, dh: np.ndarray, dc: np.ndarray,
                        w_hh: np.ndarray, cache: list[Step],
                        norm_hh: StepBackward | None = None,
                        norm_c: StepBackward | None = None
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Backpropagation through time: (dL/d pre (T, N, 4H), dL/dW_hh, dL/dh_0, dL/dc_0) from
    dL/d hidden states ``d_out`` (T, N, H) or None, and dL/dh_T, dL/dc_T (N, H).

    dL/d pre is also dL/d a_x (the input projection's gradient before its norm) and, summed
    over T and N, dL/db.
    """
    steps = len(cache)
    dpre_all = np.empty((steps, dh.shape[0], 4 * dh.shape[1]), dtype=dh.dtype)
    dw_hh = np.zeros_like(w_hh, dtype=dh.dtype)
    for t in reversed(range(steps)):
        s = cache[t]
        if d_out is not None:
            dh = dh + d_out[t]
        do, dc_hat = lstm_output_backward(dh, s.gates.o, s.tanh_c)
        if norm_c is not None:
            dc_hat = norm_c(dc_hat, s.norm_c)
        # c_t reaches the loss through h_t and through c_{t+1}: the two paths add.
        dpre, dc = lstm_cell_backward(dc + dc_hat, do, s.gates)
        dpre_all[t] = dpre
        da_h = dpre if norm_hh is None else norm_hh(dpre, s.norm_h)
        dw_hh += da_h.T @ s.h_prev
        dh = da_h @ w_hh
    return dpre_all, dw_hh, dh, dc


__all__ = ["GateCache", "Step", "lstm_backward_steps", "lstm_cell_backward",
           "lstm_cell_forward", "lstm_forward_steps", "lstm_output_backward",
           "lstm_output_forward", "sigmoid"]
