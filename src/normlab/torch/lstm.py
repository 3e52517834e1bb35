"""LSTM with optional layer / recurrent batch / sequence-wise batch normalization, in torch.

The torch twin of :class:`normlab.nn.recurrent.LSTM` (same equations, parameter names, shapes and
gate order i, f, g, o; autograd instead of the hand-written BPTT), built from this package's
sequence norms. Single layer, ``batch_first``: (N, T, I) -> output (N, T, H) and (h_n, c_n),
each (1, N, H). With pre = a_x + a_h + b, b = bias_ih_l0 + bias_hh_l0::

    (i, f, g, o) = split(pre);  c_t = sigmoid(f) c_{t-1} + sigmoid(i) tanh(g)
    h_t = sigmoid(o) tanh([norm_c](c_t))

``norm=``:

* ``"none"``: a_x = W_x x_t, a_h = W_h h_{t-1}: torch's nn.LSTM, and computed by its fused
  kernel (cuDNN on a GPU), whose time loop is one call;
* ``"layer"``: Ba et al. 2016 sec. 3.1 / eqs. 20-22: ``nn.LayerNorm`` of W_x x_t and of
  W_h h_{t-1} over the 4H pre-activations (gain only) and of c_t (gain and bias);
* ``"recurrent_batch"``: Cooijmans et al. 2016 eqs. 6-8: :class:`~.sequence.RecurrentBatchNorm`
  of W_x x_t, W_h h_{t-1} (gain only) and c_t, separate statistics for each of ``max_steps``
  steps (sec. 3), gamma initialised to 0.1 (sec. 4);
* ``"sequence_batch"``: :class:`~.sequence.SequenceBatchNorm` of W_x x over batch x time (one
  set of statistics, Laurent et al. 2016 sec. 4), gain only, gamma 1.

The gate norms have no beta: it would add to b (Cooijmans et al. sec. 3, "to avoid unnecessary
redundancy").
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import check_positive_int
from .sequence import RecurrentBatchNorm, SequenceBatchNorm

NORMS = ("none", "layer", "recurrent_batch", "sequence_batch")


class NormLSTM(nn.Module):
    """Single-layer batch-first LSTM with one of :data:`NORMS` (see the module docstring).

    ``max_steps``: the number of per-step statistics of ``"recurrent_batch"`` (the longest
    sequence trained on; required there). ``gamma_init``: the norms' initial gain (default 0.1
    for ``"recurrent_batch"``, else 1). Weights are drawn like torch's nn.LSTM:
    U(-1/sqrt(H), 1/sqrt(H)).
    """

    def __init__(self, input_size: int, hidden_size: int, norm: str = "none", *,
                 max_steps: int | None = None, eps: float = 1e-5,
                 momentum: float | None = 0.1, gamma_init: float | None = None,
                 device=None, dtype=None) -> None:
        super().__init__()
        if not isinstance(norm, str) or norm not in NORMS:
            raise ValueError(f"norm: expected one of {', '.join(map(repr, NORMS))}, got {norm!r}")
        if norm == "recurrent_batch":
            max_steps = check_positive_int("max_steps", max_steps)
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.norm = norm
        if gamma_init is None:
            gamma_init = 0.1 if norm == "recurrent_batch" else 1.0
        kw = {"device": device, "dtype": dtype}
        h, gates = hidden_size, 4 * hidden_size
        self.weight_ih_l0 = nn.Parameter(torch.empty(gates, input_size, **kw))
        self.weight_hh_l0 = nn.Parameter(torch.empty(gates, h, **kw))
        self.bias_ih_l0 = nn.Parameter(torch.empty(gates, **kw))
        self.bias_hh_l0 = nn.Parameter(torch.empty(gates, **kw))
        bound = 1.0 / math.sqrt(h)
        for p in (self.weight_ih_l0, self.weight_hh_l0, self.bias_ih_l0, self.bias_hh_l0):
            nn.init.uniform_(p, -bound, bound)
        self.norm_ih = self.norm_hh = self.norm_c = None
        if norm == "layer":
            self.norm_ih = nn.LayerNorm(gates, eps, bias=False, **kw)
            self.norm_hh = nn.LayerNorm(gates, eps, bias=False, **kw)
            self.norm_c = nn.LayerNorm(h, eps, **kw)
            for m in (self.norm_ih, self.norm_hh, self.norm_c):
                nn.init.constant_(m.weight, gamma_init)
        elif norm == "recurrent_batch":
            def bn(c: int, bias: bool) -> RecurrentBatchNorm:
                return RecurrentBatchNorm(c, max_steps, eps, momentum, gamma_init=gamma_init,
                                          bias=bias, **kw)
            self.norm_ih, self.norm_hh = bn(gates, False), bn(gates, False)
            self.norm_c = bn(h, True)
        elif norm == "sequence_batch":
            self.norm_ih = SequenceBatchNorm(gates, eps, momentum, bias=False, **kw)
            nn.init.constant_(self.norm_ih.weight, gamma_init)

    def _per_step(self) -> bool:
        return self.norm == "recurrent_batch"

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 3 or x.shape[2] != self.input_size or 0 in x.shape:
            raise ValueError(f"x: expected a 3D (N, T, {self.input_size}) input (batch_first, "
                             f"input_size={self.input_size}), got shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor, hx: tuple[torch.Tensor, torch.Tensor] | None = None):
        """(output (N, T, H), (h_n, c_n) each (1, N, H)); ``hx`` = (h_0, c_0), each (1, N, H)
        or (N, H), or None (zeros)."""
        self._check_input(x)
        n, steps = x.shape[:2]
        if hx is None:
            h = c = x.new_zeros(n, self.hidden_size)
        else:
            h, c = (v.reshape(n, self.hidden_size) for v in hx)
        if self.norm == "none":   # the kernel nn.LSTM calls: same equations, one call
            out, h_n, c_n = torch.lstm(x, (h[None], c[None]), [
                self.weight_ih_l0, self.weight_hh_l0, self.bias_ih_l0, self.bias_hh_l0],
                True, 1, 0.0, self.training, False, True)
            return out, (h_n, c_n)
        a_x = x.transpose(0, 1) @ self.weight_ih_l0.T      # (T, N, 4H), time-major
        if self._per_step():
            a_x = torch.stack([self.norm_ih(a_x[t], t) for t in range(steps)])
        elif self.norm_ih is not None:
            a_x = self.norm_ih(a_x)
        b = self.bias_ih_l0 + self.bias_hh_l0
        outs = []
        for t in range(steps):
            h, c = self._step(a_x[t], h, c, b, t)
            outs.append(h)
        return torch.stack(outs, 1), (h[None], c[None])

    def _step(self, a_x, h, c, b, t: int):
        """One step: (h_t, c_t) from a_x[t] and (h_{t-1}, c_{t-1})."""
        a_h = h @ self.weight_hh_l0.T
        if self.norm_hh is not None:
            a_h = self.norm_hh(a_h, t) if self._per_step() else self.norm_hh(a_h)
        i, f, g, o = (a_x + a_h + b).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        c_hat = c
        if self.norm_c is not None:
            c_hat = self.norm_c(c, t) if self._per_step() else self.norm_c(c)
        return torch.sigmoid(o) * torch.tanh(c_hat), c

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, batch_first=True, "
                f"norm={self.norm!r}")


__all__ = ["NORMS", "NormLSTM"]
