"""The LSTM classifier of ``rnn-norm`` on the NumPy engine: :class:`normlab.nn.recurrent.LSTM`
(hand-written BPTT) + a Linear head on the last hidden state, cross-entropy, the global
gradient norm clipped (Cooijmans et al. 2016 sec. 5.1: "gradient clipping at 1"), then plain
SGD or RMSProp.

:func:`build_lstm` draws every engine's initial weights (the torch twin,
:mod:`.torch_lstm`, copies them). Arrays in and out are NumPy on both engines, and both offer
``train_step``, ``logits``, ``gradient``, ``state`` / ``load_state`` and ``close``.
"""

from __future__ import annotations

import numpy as np

from .. import nn, optim

OPTIMIZERS = ("sgd", "rmsprop")


def build_lstm(input_size: int, hidden: int, n_classes: int, norm: str,
               rng: np.random.Generator) -> tuple[nn.Module, nn.Linear]:
    """(LSTM, head) with weights drawn from ``rng`` (torch's U(-1/sqrt(H), 1/sqrt(H)))."""
    lstm = nn.LSTM(input_size, hidden, norm=norm, rng=rng)
    return lstm, nn.Linear(hidden, n_classes, rng=rng)


def make_optimizer(name: str, params: list, lr: float) -> optim.Optimizer:
    """Plain SGD, or RMSProp with torch's alpha 0.99 and eps 1e-8 (Cooijmans et al. state only
    the learning rate)."""
    if name == "sgd":
        return optim.SGD(params, lr=lr)
    if name == "rmsprop":
        return optim.RMSprop(params, lr=lr)
    raise ValueError(f"optimizer: expected one of {OPTIMIZERS}, got {name!r}")


def clip_grad_norm(params, max_norm: float) -> float:
    """Scale all gradients so their global L2 norm is at most ``max_norm``; returns the norm."""
    norm = float(np.sqrt(sum(float(np.vdot(p.grad, p.grad)) for p in params
                             if p.grad is not None)))
    if norm > max_norm:
        for p in params:
            if p.grad is not None:
                p.grad *= max_norm / norm
    return norm


class NumpyLstmTrainer:
    """LSTM + head + optimizer; ``clip``: the gradient norm bound (None or 0: no clipping)."""

    engine = "numpy"

    def __init__(self, lstm, head, optimizer: str, lr: float, clip: float | None):
        self.lstm, self.head, self.clip = lstm, head, clip
        self.loss = nn.CrossEntropyLoss()
        self.params = lstm.parameters() + head.parameters()
        self.opt = make_optimizer(optimizer, self.params, lr)

    def train_step(self, x: np.ndarray, y: np.ndarray, hx=None) -> float:
        """One step on sequences ``x`` (N, T, I) from ``hx`` = (h_0, c_0) or None; the loss.
        The (clipped) gradients stay in the parameters until the next step."""
        self.lstm.train()
        self.head.train()
        self.opt.zero_grad()
        out, _ = self.lstm(x, hx)
        loss = self.loss(self.head(out[:, -1]), y)
        # the loss sees only the last step, h_T: its gradient enters as dL/dh_T, with no (N, T, H)
        # array of zeros for the other steps; the sequences need no gradient
        self.lstm.backward_params(None, dh_n=self.head.backward(self.loss.backward()))
        if self.clip:
            clip_grad_norm(self.params, self.clip)
        self.opt.step()
        return float(loss)

    def logits(self, x: np.ndarray, hx=None) -> np.ndarray:
        """Eval-mode (running statistics) logits of the last hidden state."""
        self.lstm.eval()
        self.head.eval()
        out, _ = self.lstm(x, hx)
        return self.head(out[:, -1])

    def gradient(self) -> np.ndarray:
        """The last step's clipped gradient over all parameters, flattened, as float64."""
        return np.concatenate([p.grad.ravel() for p in self.params]).astype(np.float64)

    def state(self) -> dict[str, np.ndarray]:
        return {**{f"lstm.{k}": v for k, v in self.lstm.state_dict().items()},
                **{f"head.{k}": v for k, v in self.head.state_dict().items()},
                **{f"optim.{k}": v for k, v in self.opt.state_dict().items()}}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        def part(prefix):
            return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}

        self.lstm.load_state_dict(part("lstm."))
        self.head.load_state_dict(part("head."))
        self.opt.load_state_dict(part("optim."))

    def close(self) -> None:
        """Nothing to release."""
