"""LSTM with optional layer / recurrent batch / sequence-wise batch normalization, and BPTT.

Single layer, ``batch_first``: input (N, T, I) -> outputs (N, T, H) and final (h_n, c_n), each
(1, N, H) as ``torch.nn.LSTM(batch_first=True)`` returns them. Parameters carry torch's names and
shapes (``weight_ih_l0`` (4H, I), ``weight_hh_l0`` (4H, H), ``bias_ih_l0``, ``bias_hh_l0``, gate
order i, f, g, o), so with ``norm="none"`` a torch state dict loads as it is; the normalization
options add child modules ``norm_ih``, ``norm_hh``, ``norm_c``.

``norm=`` (the pre-activation is pre = a_x + a_h + b with b = bias_ih_l0 + bias_hh_l0):

* ``"none"``: a_x = W_x x_t, a_h = W_h h_{t-1}; torch's LSTM.
* ``"layer"``: Ba et al. 2016, Layer Normalization, sec. 3.1 / eqs. 20-22: a_x = LN(W_x x_t),
  a_h = LN(W_h h_{t-1}) over all 4H pre-activations of each sample, and h_t = o * tanh(LN(c_t)).
* ``"recurrent_batch"``: Cooijmans et al. 2016, Recurrent Batch Normalization, eqs. 6-8: BN of
  W_x x_t, of W_h h_{t-1} and of c_t with SEPARATE statistics for every time step t (sec. 3);
  gamma is shared across time and initialised to 0.1 (sec. 4), beta to 0. Running statistics
  are kept per step up to the longest sequence seen in training; in eval, steps beyond it use the
  last step's statistics (the paper's T_max rule).
* ``"sequence_batch"``: Laurent et al. 2016 style sequence-wise BN: only the input projection
  W_x x is normalised, with ONE set of statistics over batch x time (the recurrent W_h h is not
  averaged over time, whose statistics change from step to step); gamma 1, beta 0.

The gate-side norms (``norm_ih``, ``norm_hh``) have a gain but no bias: their beta would add to b,
which already exists (Cooijmans et al. set beta_x = beta_h = 0 "to avoid unnecessary
redundancy"; for LN, beta_1 + beta_2 + b is one vector). The cell norm ``norm_c`` has both.

Every normalization (:mod:`.step_norm`) is a call into :mod:`normlab.functional`
(batch_norm_train/eval/backward, layer_norm_forward/backward; the running update is the policy
shared by every BN, :mod:`normlab.functional.policy`). The time loop (recurrent product, per-step
norms, elementwise step, BPTT) is :func:`normlab.functional.lstm.lstm_forward_steps` /
``lstm_backward_steps`` on time-major (T, N, .) arrays, or with numba their compiled twins in
:mod:`normlab.kernels.lstm`. ``backward(d_out, dh_n=None, dc_n=None)`` runs backpropagation
through time, accumulates every parameter gradient into ``.grad`` and returns dx
(``backward_params`` skips dx); the gradient w.r.t. the initial state (when ``hx`` was given)
is left in ``grad_hx``.

Example -- 8x8 digits as sequences of T=8 pixel rows with I=8 pixels each::

    from importlib.resources import files
    import numpy as np
    from normlab import nn, optim
    from normlab.nn.recurrent import LSTM
    d = np.load(files("normlab") / "data/digits.npz")
    x, y = (d["images"] / 16.0).astype(np.float32), d["labels"].astype(np.int64)
    lstm, head, ce = LSTM(8, 64, norm="layer"), nn.Linear(64, 10), nn.CrossEntropyLoss()
    opt, rng = optim.SGD(lstm.parameters() + head.parameters(), lr=0.5), np.random.default_rng(0)
    for step in range(300):
        idx = rng.choice(len(x), 64, replace=False)
        out, (h_n, c_n) = lstm(x[idx])            # out: (64, 8, 64); last hidden state out[:, -1]
        loss = ce(head(out[:, -1]), y[idx])
        d_out = np.zeros_like(out)
        d_out[:, -1] = head.backward(ce.backward())  # gradient on the last step only
        lstm.backward(d_out)
        opt.step(); opt.zero_grad()

With 300 steps of plain SGD on the first 1,400 shuffled digits and the other 397 as test set,
one run (weights and batches from seed 0) reached test accuracy 0.82 (none), 0.97 (layer),
0.975 (recurrent_batch) and 0.95 (sequence_batch); one forward + backward of a (64, 8, 8)
batch with H=64 takes a few milliseconds.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .. import kernels
from .._checks import as_float_array, check_eps, check_momentum, check_positive_int
from ..functional import lstm as reference_loops
from . import init
from .module import Module, Parameter
from .step_norm import StepBatchNorm, StepLayerNorm, StepNorm

NORMS = ("none", "layer", "recurrent_batch", "sequence_batch")
BATCH_NORMS = ("recurrent_batch", "sequence_batch")


class _Forward(NamedTuple):
    x: np.ndarray         # the input, time-major (T, N, I)
    w_ih: np.ndarray
    w_hh: np.ndarray
    norm_x: object        # cache of norm_ih (None without it)
    steps: object         # what the time loop saved
    fast: bool            # whether kernels.lstm ran it (else functional.lstm)


def _check_norm(norm) -> str:
    if not isinstance(norm, str) or norm not in NORMS:
        raise ValueError(f"norm: expected one of {', '.join(map(repr, NORMS))}, got {norm!r}")
    return norm


class LSTM(Module):
    """Single-layer batch-first LSTM with a hand-written BPTT (see the module docstring).

    ``gamma_init`` is the initial gain of the batch norms (default 0.1 for ``recurrent_batch``,
    as Cooijmans et al. recommend, else 1). Weights and biases are drawn like torch's:
    U(-1/sqrt(H), 1/sqrt(H)), from ``rng`` (Generator, seed, or None = normlab.nn.init's).
    """

    def __init__(self, input_size: int, hidden_size: int, norm: str = "none", *,
                 eps: float = 1e-5, momentum: float | None = 0.1,
                 gamma_init: float | None = None, rng=None, dtype=np.float32):
        super().__init__()
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.norm = _check_norm(norm)
        self.eps = check_eps(eps)
        self.momentum = check_momentum(momentum)
        if gamma_init is None:
            gamma_init = 0.1 if norm == "recurrent_batch" else 1.0
        if isinstance(gamma_init, bool) or not isinstance(gamma_init, (int, float)):
            raise TypeError(f"gamma_init: expected a number or None, got "
                            f"{type(gamma_init).__name__}")
        dtype = np.dtype(dtype)
        h, gates = self.hidden_size, 4 * self.hidden_size
        rng = init.get_rng(rng)
        bound = 1.0 / math.sqrt(h)
        self.weight_ih_l0 = Parameter(init.uniform((gates, self.input_size), bound, rng, dtype))
        self.weight_hh_l0 = Parameter(init.uniform((gates, h), bound, rng, dtype))
        self.bias_ih_l0 = Parameter(init.uniform((gates,), bound, rng, dtype))
        self.bias_hh_l0 = Parameter(init.uniform((gates,), bound, rng, dtype))
        self.norm_ih = self.norm_hh = self.norm_c = None
        if norm == "layer":
            self.norm_ih = StepLayerNorm(gates, False, self.eps, dtype)
            self.norm_hh = StepLayerNorm(gates, False, self.eps, dtype)
            self.norm_c = StepLayerNorm(h, True, self.eps, dtype)
        elif norm == "recurrent_batch":
            def bn(c, bias):
                return StepBatchNorm(c, True, gamma_init, bias, self.eps, self.momentum, dtype)
            self.norm_ih, self.norm_hh = bn(gates, False), bn(gates, False)
            self.norm_c = bn(h, True)
        elif norm == "sequence_batch":
            self.norm_ih = StepBatchNorm(gates, False, gamma_init, False, self.eps, self.momentum,
                                         dtype)
        self.grad_hx: tuple[np.ndarray, np.ndarray] | None = None
        self._fwd: _Forward | None = None

    # -- checks (all before any state changes) --------------------------------------------
    def _check_input(self, x) -> np.ndarray:
        x = as_float_array("x", x)
        if x.ndim != 3 or x.shape[2] != self.input_size or 0 in x.shape:
            raise ValueError(f"x: expected a 3D (N, T, {self.input_size}) input (batch_first, "
                             f"input_size={self.input_size}), got shape {tuple(x.shape)}")
        n, steps = x.shape[:2]
        if self.training and self.norm in BATCH_NORMS:
            values = n if self.norm == "recurrent_batch" else n * steps
            if values <= 1:
                raise ValueError(f"x: expected more than 1 value per channel for norm="
                                 f"{self.norm!r} in training, got input shape {tuple(x.shape)}")
        return x

    def _state_arg(self, name: str, value, n: int, dtype) -> np.ndarray:
        h = self.hidden_size
        value = as_float_array(name, value)
        if value.shape not in ((1, n, h), (n, h)):
            raise ValueError(f"{name}: expected shape (1, {n}, {h}) or ({n}, {h}), "
                             f"got {tuple(value.shape)}")
        return value.reshape(n, h).astype(dtype, copy=False)

    def _initial_state(self, hx, n: int, dtype) -> tuple[np.ndarray, np.ndarray]:
        if hx is None:
            zeros = np.zeros((n, self.hidden_size), dtype=dtype)
            return zeros, zeros
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise TypeError(f"hx: expected a (h_0, c_0) pair or None, got {type(hx).__name__}")
        return self._state_arg("h_0", hx[0], n, dtype), self._state_arg("c_0", hx[1], n, dtype)

    def _norms(self) -> list[StepNorm]:
        return [m for m in (self.norm_ih, self.norm_hh, self.norm_c) if m is not None]

    # -- forward -------------------------------------------------------------------------
    def forward(self, x: np.ndarray, hx=None):
        """(output (N, T, H), (h_n, c_n) each (1, N, H)); ``hx`` = (h_0, c_0) or None (zeros)."""
        x = self._check_input(x)
        n = x.shape[0]
        dtype = np.result_type(x.dtype, self.weight_ih_l0.dtype)
        h, c = self._initial_state(hx, n, dtype)
        for m in self._norms():
            m.begin()
        w_ih, w_hh = self.weight_ih_l0.data, self.weight_hh_l0.data
        b = self.bias_ih_l0.data + self.bias_hh_l0.data
        # time-major: every step's rows are one contiguous (N, .) block
        x_t = np.ascontiguousarray(x.transpose(1, 0, 2))
        # one GEMM per step slice either way; OpenBLAS runs a contiguous W^T ~1.8x faster than
        # the transposed view (CPU time, (64, 28) @ (28, 256) slices)
        a_x = x_t @ np.ascontiguousarray(w_ih.T)
        norm_x = None
        if self.norm_ih is not None:
            a_x, norm_x = self.norm_ih.forward_seq(a_x)
        fast = kernels.for_array(a_x, "lstm")
        hs, c, steps = (fast or reference_loops).lstm_forward_steps(
            a_x, w_hh, b, h, c, *(None if m is None else m.forward_step
                                  for m in (self.norm_hh, self.norm_c)))
        for m in self._norms():
            m.commit()
        self._fwd = _Forward(x_t, w_ih, w_hh, norm_x, steps, fast is not None)
        # copies: the fast loops' hs and c are their cache, which a caller must not reach
        return hs.transpose(1, 0, 2).copy(), (hs[-1][None].copy(), c[None].copy())

    # -- backward through time ---------------------------------------------------------------
    def _grad_arg(self, name: str, value, shape: tuple[int, ...], alt=None) -> np.ndarray | None:
        if value is None:
            return None
        value = as_float_array(name, value)
        if value.shape != shape and value.shape != alt:
            want = f"{shape}" + (f" or {alt}" if alt else "")
            raise ValueError(f"{name}: expected shape {want}, got {tuple(value.shape)}")
        return value.reshape(shape)

    def backward(self, d_out: np.ndarray | None, dh_n: np.ndarray | None = None,
                 dc_n: np.ndarray | None = None) -> np.ndarray:
        """dx (N, T, I) from dL/d output (N, T, H) and optionally dL/dh_n, dL/dc_n.

        ``d_out`` may be None (or zero except the last step) when the loss only sees h_n.
        Gradients ACCUMULATE into every parameter's ``.grad``; dL/d(h_0, c_0) goes to
        ``grad_hx`` as two (1, N, H) arrays.
        """
        return self._backward(d_out, dh_n, dc_n, input_grad=True)

    def backward_params(self, d_out: np.ndarray | None, dh_n: np.ndarray | None = None,
                        dc_n: np.ndarray | None = None) -> None:
        """:meth:`backward` without dx: every parameter gradient and ``grad_hx``, but not the
        (N, T, I) product that only a layer below would need."""
        self._backward(d_out, dh_n, dc_n, input_grad=False)

    def _backward(self, d_out, dh_n, dc_n, input_grad: bool) -> np.ndarray | None:
        fwd = self._saved(self._fwd)
        steps, n, _ = fwd.x.shape
        h = self.hidden_size
        d_out = self._grad_arg("d_out", d_out, (n, steps, h))
        dh_n = self._grad_arg("dh_n", dh_n, (n, h), (1, n, h))
        dc_n = self._grad_arg("dc_n", dc_n, (n, h), (1, n, h))
        dtype = np.result_type(fwd.x.dtype, fwd.w_ih.dtype)
        dh = np.zeros((n, h), dtype=dtype) if dh_n is None else dh_n.astype(dtype)
        dc = np.zeros((n, h), dtype=dtype) if dc_n is None else dc_n.astype(dtype)
        loops = kernels.load("lstm") if fwd.fast else reference_loops
        da_x, dw_hh, dh, dc = loops.lstm_backward_steps(
            None if d_out is None else d_out.transpose(1, 0, 2), dh, dc, fwd.w_hh, fwd.steps,
            *(None if m is None else m.backward_step for m in (self.norm_hh, self.norm_c)))
        # the column sums as one BLAS product: ~2.5x faster than NumPy's reduction over axes 0, 1
        db = np.ones(steps * n, da_x.dtype) @ da_x.reshape(steps * n, 4 * h)
        if self.norm_ih is not None:
            da_x = self.norm_ih.backward_seq(da_x, fwd.norm_x)
        da_x2 = da_x.reshape(steps * n, 4 * h)
        self.weight_ih_l0.accumulate(da_x2.T @ fwd.x.reshape(steps * n, self.input_size))
        self.weight_hh_l0.accumulate(dw_hh)
        self.bias_ih_l0.accumulate(db)
        self.bias_hh_l0.accumulate(db.copy())
        self.grad_hx = (dh[None], dc[None])
        if not input_grad:
            return None
        return np.ascontiguousarray((da_x @ fwd.w_ih).transpose(1, 0, 2))

    # -- state dict: per-step buffers grow with the sequence length ----------------------------
    def load_state_dict(self, state_dict, strict: bool = True) -> None:
        """As :meth:`Module.load_state_dict`, first resizing per-step statistics to the saved
        number of steps (restored if the load then fails, so a failed load changes nothing)."""
        resized = []
        if hasattr(state_dict, "get"):
            for name, m in self.named_modules():
                if not isinstance(m, StepBatchNorm) or not m.per_step:
                    continue
                saved = state_dict.get(f"{name}.running_mean")
                shape = np.shape(saved) if saved is not None else ()
                if len(shape) == 2 and shape[1] == m.num_features and shape[0] >= 1:
                    resized.append((m, (m.running_mean, m.running_var, m.num_batches_tracked)))
                    m.resize(shape[0])
        try:
            super().load_state_dict(state_dict, strict)
        except Exception:
            for m, (mean, var, count) in resized:
                m.running_mean, m.running_var, m.num_batches_tracked = mean, var, count
            raise

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, batch_first=True, "
                f"norm={self.norm!r}")


__all__ = ["LSTM", "NORMS", "StepBatchNorm", "StepLayerNorm"]
