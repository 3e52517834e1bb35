"""PyTorch eager twin of ``normlab.nn.LSTM`` (single layer, batch first), for timing only.

``norm="none"`` is ``torch.nn.LSTM`` itself (torch's fused CPU kernel: its best case). The
normalised variants have no torch module, so they are written from torch ops with the same
equations (Ba et al. 2016 eqs. 20-22; Cooijmans et al. 2016 eqs. 6-8 with running statistics
per step; sequence-wise BN of W_x x over batch x time), as a torch user would write them: one
autograd graph, the step loop in Python. tests/nn/test_recurrent.py holds normlab's LSTM to an
autograd reference of these equations; this file only has to cost what they cost.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class StepBatchNorm(nn.Module):
    """BN of (N, C) with running statistics per step t (``steps`` rows) or shared (1 row)."""

    def __init__(self, channels: int, steps: int, gamma: float, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), gamma))
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None
        self.register_buffer("running_mean", torch.zeros(steps, channels))
        self.register_buffer("running_var", torch.ones(steps, channels))

    def forward(self, z, t: int = 0):
        t = min(t, self.running_mean.shape[0] - 1)
        return F.batch_norm(z, self.running_mean[t], self.running_var[t], self.weight, self.bias,
                            self.training, 0.1, 1e-5)


class StepLayerNorm(nn.LayerNorm):
    def forward(self, z, t: int = 0):
        return super().forward(z)


class NormalizedLSTM(nn.Module):
    def __init__(self, input_size: int, hidden_size: int, norm: str, steps: int):
        super().__init__()
        gates, bound = 4 * hidden_size, 1 / math.sqrt(hidden_size)
        self.hidden_size = hidden_size
        self.weight_ih_l0 = nn.Parameter(torch.empty(gates, input_size).uniform_(-bound, bound))
        self.weight_hh_l0 = nn.Parameter(torch.empty(gates, hidden_size).uniform_(-bound, bound))
        self.bias_ih_l0 = nn.Parameter(torch.empty(gates).uniform_(-bound, bound))
        self.bias_hh_l0 = nn.Parameter(torch.empty(gates).uniform_(-bound, bound))
        self.norm, self.norm_hh, self.norm_c = norm, None, None
        if norm == "layer":
            self.norm_ih = StepLayerNorm(gates, bias=False)
            self.norm_hh = StepLayerNorm(gates, bias=False)
            self.norm_c = StepLayerNorm(hidden_size)
        elif norm == "recurrent_batch":
            self.norm_ih = StepBatchNorm(gates, steps, 0.1, False)
            self.norm_hh = StepBatchNorm(gates, steps, 0.1, False)
            self.norm_c = StepBatchNorm(hidden_size, steps, 0.1, True)
        else:
            self.norm_ih = StepBatchNorm(gates, 1, 1.0, False)

    def forward(self, x, hx=None):
        n, steps, _ = x.shape
        a_x = x @ self.weight_ih_l0.T
        if self.norm == "layer":
            a_x = self.norm_ih(a_x)
        elif self.norm == "recurrent_batch":
            a_x = torch.stack([self.norm_ih(a_x[:, t], t) for t in range(steps)], 1)
        else:
            a_x = self.norm_ih(a_x.reshape(n * steps, -1)).reshape(a_x.shape)
        b = self.bias_ih_l0 + self.bias_hh_l0
        if hx is None:
            h = c = x.new_zeros(n, self.hidden_size)
        else:   # (h_0, c_0), each (1, N, H) as torch.nn.LSTM takes them
            h, c = (s.reshape(n, self.hidden_size) for s in hx)
        outs = []
        for t in range(steps):
            a_h = h @ self.weight_hh_l0.T
            if self.norm_hh is not None:
                a_h = self.norm_hh(a_h, t)
            i, f, g, o = (a_x[:, t] + a_h + b).chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            c_hat = c if self.norm_c is None else self.norm_c(c, t)
            h = torch.sigmoid(o) * torch.tanh(c_hat)
            outs.append(h)
        return torch.stack(outs, 1), (h[None], c[None])


def make_lstm(input_size: int, hidden_size: int, norm: str, steps: int) -> nn.Module:
    """torch.nn.LSTM for "none", else :class:`NormalizedLSTM`."""
    if norm == "none":
        return nn.LSTM(input_size, hidden_size, batch_first=True)
    return NormalizedLSTM(input_size, hidden_size, norm, steps)
