"""The LSTM time loops, fast: :func:`normlab.functional.lstm.lstm_forward_steps` and
:func:`~normlab.functional.lstm.lstm_backward_steps` with the same signatures and results.

What differs from the readable loops (which allocate ~15 arrays per step):

* every step's state lives in preallocated (T, N, .) arrays, and the elementwise math of a step
  is one compiled pass forward and one backward (:func:`step_forward`, :func:`step_backward`),
  sigmoid(p) = (1 + tanh(p/2)) / 2 so that one tanh serves all four gates. In float32 that
  tanh is :func:`~.fast_tanh.tanh_value`'s rational approximation, which vectorises inside the
  pass. With a cell norm between c_t and its tanh, the forward is three passes
  (:func:`gate_inputs`, :func:`cell_forward`, :func:`hidden_state`) with ``np.tanh`` (NumPy's
  SIMD code) between them;
* the loops run over one gate block at a time with at most a few arrays each: numba cannot
  tell LLVM that its arrays do not overlap, and LLVM vectorises a loop only after a runtime
  overlap check per pair of arrays, which it gives up on for a loop touching seven (a fused
  backward and cell update ran several times slower);
* the recurrent weight gradient is one (4H, T*N) @ (T*N, H) product after the loop instead of T
  small ones inside it.

The per-step norms are the same callables the readable loop calls. A norm's cache may keep its
input, so each step's recurrent pre-activation gets its own row of a (T, N, 4H) array.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._jit import inline, jit
from .fast_tanh import tanh_value, vector_jit

# the row helpers are inlined into their callers (see _jit.inline)
_row = inline


class Steps(NamedTuple):
    hs: np.ndarray          # (T+1, N, H): h_0 .. h_T
    cs: np.ndarray          # (T+1, N, H): c_0 .. c_T (before the cell norm)
    gates: np.ndarray       # (T, N, 4H): i, f, g, o after their nonlinearities
    tanh_c: np.ndarray      # (T, N, H): tanh of the (normalised) cell
    norm_h: list            # caches of the recurrent norm per step (empty without it)
    norm_c: list            # caches of the cell norm per step (empty without it)


@jit
def _sigmoid_scale(gates, dtype):
    """1/2 over the sigmoid gates i, f, o and 1 over g: multiplying by it is exact, and one loop
    over all 4H columns of a row vectorises better than three over the gate blocks (2.5 vs 7 us
    at N = H = 64)."""
    h = gates // 4
    s = np.full(gates, 0.5, dtype)
    s[2 * h:3 * h] = 1.0
    return s


@jit
def gate_inputs(a_x, a_h, b, z):
    """z = a_x + a_h + b, halved in the sigmoid gates i, f, o (not in g)."""
    n, gates = z.shape
    s = _sigmoid_scale(gates, z.dtype)
    for r in range(n):
        zr, xr, hr = z[r], a_x[r], a_h[r]
        for k in range(gates):
            zr[k] = s[k] * (xr[k] + hr[k] + b[k])


@jit
def _sigmoid_shift(gates, dtype):
    """1/2 over the sigmoid gates and 0 over g: with :func:`_sigmoid_scale`, a gate is
    scale * tanh(scale * p) + shift, so sigmoid(p) = tanh(p/2)/2 + 1/2 while g stays tanh(p)."""
    shift = _sigmoid_scale(gates, dtype)
    h = gates // 4
    shift[2 * h:3 * h] = 0.0
    return shift


@_row
def _cell_row(a, c_prev, c):
    """One row of c = f * c_prev + i * g from the gates a = (i, f, g, o)."""
    h = c.size
    i, f, g = a[:h], a[h:2 * h], a[2 * h:3 * h]
    for k in range(h):
        c[k] = f[k] * c_prev[k] + i[k] * g[k]


@_row
def _hidden_row(o, tanh_c, h):
    """One row of h = o * tanh(c_hat)."""
    for k in range(h.size):
        h[k] = o[k] * tanh_c[k]


@jit
def cell_forward(act, c_prev, c):
    """``act`` (tanh of :func:`gate_inputs`) becomes the gates i, f, g, o in place;
    c = f * c_prev + i * g."""
    n, gates = act.shape
    s, shift = _sigmoid_scale(gates, act.dtype), _sigmoid_shift(gates, act.dtype)
    for r in range(n):
        a = act[r]
        for k in range(gates):
            a[k] = s[k] * a[k] + shift[k]
        _cell_row(a, c_prev[r], c[r])


@vector_jit
def step_forward(a_x, a_h, b, act, c_prev, c, tanh_c, h):
    """A whole step after the recurrent product when no cell norm sits between c_t and its
    tanh: :func:`gate_inputs`, tanh, :func:`cell_forward`, tanh(c_t) and :func:`hidden_state`
    in one pass per row, with :func:`~.fast_tanh.tanh_value`: one call from Python instead of
    five, 8.4 us instead of 13.3 us per step at N = H = 64, calls included."""
    n, gates = act.shape
    hidden = gates // 4
    s, shift = _sigmoid_scale(gates, act.dtype), _sigmoid_shift(gates, act.dtype)
    for r in range(n):
        a, xr, hr = act[r], a_x[r], a_h[r]
        for k in range(gates):
            a[k] = s[k] * tanh_value(s[k] * (xr[k] + hr[k] + b[k])) + shift[k]
        cn, tc = c[r], tanh_c[r]
        _cell_row(a, c_prev[r], cn)
        for k in range(hidden):
            tc[k] = tanh_value(cn[k])
        _hidden_row(a[3 * hidden:], tc, h[r])


@jit
def hidden_state(act, tanh_c, h_out):
    """h = o * tanh(c_hat)."""
    n, hidden = h_out.shape
    for r in range(n):
        _hidden_row(act[r, 3 * hidden:], tanh_c[r], h_out[r])


@_row
def _gate_grads(total, act, c_prev, dc, dpre):
    """One row of c = f c_prev + i g backward: the i, f, g blocks of dpre from dL/dc_t =
    ``total``; dc becomes dL/dc_{t-1}."""
    h = dc.size
    i, f, g = act[:h], act[h:2 * h], act[2 * h:3 * h]
    di, df, dg = dpre[:h], dpre[h:2 * h], dpre[2 * h:3 * h]
    for k in range(h):
        di[k] = total[k] * g[k] * i[k] * (1 - i[k])
    for k in range(h):
        df[k] = total[k] * c_prev[k] * f[k] * (1 - f[k])
    for k in range(h):
        dg[k] = total[k] * i[k] * (1 - g[k] * g[k])
    for k in range(h):
        dc[k] = total[k] * f[k]


@_row
def _output_grads(dh, d_out, o, tanh_c, do, grad):
    """One row of h = o * tanh(c_hat) backward: grad = dL/dh_t = dh + d_out, and the o block."""
    for k in range(grad.size):
        grad[k] = dh[k] + d_out[k]
    for k in range(grad.size):
        do[k] = grad[k] * tanh_c[k] * o[k] * (1 - o[k])


@jit
def output_backward(dh, d_out, act, tanh_c, dpre, dc_hat):
    """h = o * tanh(c_hat) backward, with dL/dh = dh + d_out: the o block of dpre and
    dc_hat = dL/dc_hat."""
    h = dh.shape[1]
    grad = np.empty(h, dh.dtype)
    for r in range(dh.shape[0]):
        o, tc, dch = act[r, 3 * h:], tanh_c[r], dc_hat[r]
        _output_grads(dh[r], d_out[r], o, tc, dpre[r, 3 * h:], grad)
        for k in range(h):
            dch[k] = grad[k] * o[k] * (1 - tc[k] * tc[k])


@jit
def cell_backward(dc_hat, act, c_prev, dc, dpre):
    """c = f c_prev + i g backward: the i, f, g blocks of dpre from dL/dc_t = dc + dc_hat (the
    paths through c_{t+1} and through h_t); dc becomes dL/dc_{t-1}."""
    total = np.empty(dc.shape[1], dc.dtype)
    for r in range(dc.shape[0]):
        dcr, dch = dc[r], dc_hat[r]
        for k in range(total.size):
            total[k] = dcr[k] + dch[k]
        _gate_grads(total, act[r], c_prev[r], dcr, dpre[r])


@jit
def step_backward(dh, d_out, act, tanh_c, c_prev, dc, dpre):
    """:func:`output_backward` then :func:`cell_backward` with no cell norm between, row by
    row: dL/dc_t = dc + dL/dh_t * o * tanh'(c_t) without an intermediate array."""
    h = dh.shape[1]
    scratch = np.empty((2, h), dh.dtype)
    grad, total = scratch[0], scratch[1]
    for r in range(dh.shape[0]):
        o, tc, dcr = act[r, 3 * h:], tanh_c[r], dc[r]
        _output_grads(dh[r], d_out[r], o, tc, dpre[r, 3 * h:], grad)
        for k in range(h):
            total[k] = dcr[k] + grad[k] * o[k] * (1 - tc[k] * tc[k])
        _gate_grads(total, act[r], c_prev[r], dcr, dpre[r])


def lstm_forward_steps(a_x, w_hh, b, h, c, norm_hh=None, norm_c=None):
    """See :func:`normlab.functional.lstm.lstm_forward_steps`; the cache is a :class:`Steps`."""
    steps, n, gates = a_x.shape
    hidden = gates // 4
    dtype = np.result_type(a_x, h)
    hs = np.empty((steps + 1, n, hidden), dtype)
    cs = np.empty((steps + 1, n, hidden), dtype)
    hs[0], cs[0] = h, c
    act = np.empty((steps, n, gates), dtype)
    tanh_c = np.empty((steps, n, hidden), dtype)
    a_h = np.empty((steps if norm_hh is not None else 1, n, gates), dtype)
    a_x, b = a_x.astype(dtype, copy=False), b.astype(dtype, copy=False)
    # OpenBLAS multiplies by a contiguous W_hh^T 20-35% faster than by the transposed view at
    # these sizes (h is (N, H), H ~ 64); the same products summed in the same order
    w_t = np.ascontiguousarray(w_hh.T)
    caches_h, caches_c = [], []
    for t in range(steps):
        z = a_h[t if norm_hh is not None else 0]
        np.matmul(hs[t], w_t, out=z)
        if norm_hh is not None:
            z, cache = norm_hh(z, t)
            caches_h.append(cache)
        if norm_c is None:
            step_forward(a_x[t], z, b, act[t], cs[t], cs[t + 1], tanh_c[t], hs[t + 1])
            continue
        gate_inputs(a_x[t], z, b, act[t])
        np.tanh(act[t], out=act[t])
        cell_forward(act[t], cs[t], cs[t + 1])
        c_hat = cs[t + 1]
        if norm_c is not None:
            c_hat, cache = norm_c(c_hat, t)
            caches_c.append(cache)
        np.tanh(c_hat, out=tanh_c[t])
        hidden_state(act[t], tanh_c[t], hs[t + 1])
    return hs[1:], cs[-1], Steps(hs, cs, act, tanh_c, caches_h, caches_c)


def lstm_backward_steps(d_out, dh, dc, w_hh, cache: Steps, norm_hh=None, norm_c=None):
    """See :func:`normlab.functional.lstm.lstm_backward_steps`."""
    hs, cs, act, tanh_c, caches_h, caches_c = cache
    steps, n, gates = act.shape
    dtype = act.dtype
    dh, dc = dh.astype(dtype, copy=True), dc.astype(dtype, copy=True)   # updated in place
    no_out = np.zeros_like(dh)
    dpre = np.empty_like(act)
    da_h = dpre if norm_hh is None else np.empty_like(act)
    dc_hat = np.empty_like(dh)
    for t in reversed(range(steps)):
        grad_out = no_out if d_out is None else d_out[t]
        if norm_c is None:
            step_backward(dh, grad_out, act[t], tanh_c[t], cs[t], dc, dpre[t])
        else:
            output_backward(dh, grad_out, act[t], tanh_c[t], dpre[t], dc_hat)
            cell_backward(norm_c(dc_hat, caches_c[t]), act[t], cs[t], dc, dpre[t])
        if norm_hh is not None:
            da_h[t] = norm_hh(dpre[t], caches_h[t])
        np.matmul(da_h[t], w_hh, out=dh)
    hidden = hs.shape[-1]
    # dA^T H_prev directly: ~10% less CPU time than (H_prev^T dA)^T and a copy (OpenBLAS 0.3.31)
    dw_hh = da_h.reshape(-1, gates).T @ hs[:-1].reshape(-1, hidden)
    return dpre, dw_hh, dh, dc
