"""The torch twin of :mod:`.numpy_lstm`: :class:`normlab.torch.lstm.NormLSTM` + a Linear head,
started from the NumPy model's weights, trained with autograd, ``clip_grad_norm_`` and
torch.optim's SGD / RMSprop (alpha 0.99, eps 1e-8, as normlab.optim's). Imported only when the
torch engine is asked for.

Per-step statistics (``recurrent_batch``) are kept for the training sequences' length
(``max_steps``), which the NumPy LSTM grows its buffers to at the first step.
"""

from __future__ import annotations

import numpy as np
import torch

from ..torch import device as devices
from ..torch.lstm import NormLSTM
from .torch.training import to_device


class TorchLstmTrainer:
    """The trainer interface of :class:`.numpy_lstm.NumpyLstmTrainer`; ``device`` as
    :class:`.torch.TorchTrainer`'s (None: CPU with the process settings left alone)."""

    engine = "torch"

    def __init__(self, lstm, head, steps: int, optimizer: str, lr: float, clip: float | None,
                 device=None):
        self.device = devices.resolve_device("cpu" if device is None else device)
        self.settings = None if device is None else devices.deterministic(self.device)
        self.lstm = NormLSTM(lstm.input_size, lstm.hidden_size, lstm.norm, max_steps=steps,
                             eps=lstm.eps, momentum=lstm.momentum)
        self.head = torch.nn.Linear(head.weight.shape[1], head.weight.shape[0])
        for twin, model in ((self.lstm, lstm), (self.head, head)):   # the weights, not buffers
            weights = dict(model.named_parameters())
            if list(weights) != [k for k, _ in twin.named_parameters()]:
                raise ValueError(f"lstm: expected the parameters of a {type(twin).__name__}, "
                                 f"got {list(weights)}")
            twin.load_state_dict({k: torch.from_numpy(np.array(v.data))
                                  for k, v in weights.items()}, strict=False)
        self.lstm.to(self.device)
        self.head.to(self.device)
        self.clip = clip
        self.loss = torch.nn.CrossEntropyLoss()
        self.params = list(self.lstm.parameters()) + list(self.head.parameters())
        if optimizer == "sgd":
            self.opt = torch.optim.SGD(self.params, lr=lr)
        elif optimizer == "rmsprop":
            self.opt = torch.optim.RMSprop(self.params, lr=lr, alpha=0.99, eps=1e-8)
        else:
            raise ValueError(f"optimizer: expected 'sgd' or 'rmsprop', got {optimizer!r}")

    def _hx(self, hx):
        return None if hx is None else tuple(to_device(v, self.device) for v in hx)

    def train_step(self, x: np.ndarray, y: np.ndarray, hx=None) -> float:
        self.lstm.train()
        self.head.train()
        self.opt.zero_grad()
        out, _ = self.lstm(to_device(x, self.device), self._hx(hx))
        loss = self.loss(self.head(out[:, -1]), to_device(y, self.device))
        loss.backward()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.opt.step()
        return float(loss.detach())

    @torch.no_grad()
    def logits(self, x: np.ndarray, hx=None) -> np.ndarray:
        self.lstm.eval()
        self.head.eval()
        out, _ = self.lstm(to_device(x, self.device), self._hx(hx))
        return self.head(out[:, -1]).cpu().numpy()

    def gradient(self) -> np.ndarray:
        return np.concatenate([p.grad.cpu().numpy().ravel() for p in self.params]
                              ).astype(np.float64)

    def state(self) -> dict[str, np.ndarray]:
        out = {f"{name}.{k}": v.detach().cpu().numpy().copy()
               for name, m in (("lstm", self.lstm), ("head", self.head))
               for k, v in m.state_dict().items()}
        for i, p in enumerate(self.params):
            for k, v in self.opt.state.get(p, {}).items():
                out[f"optim.{k}.{i}"] = v.detach().cpu().numpy().copy()
        return out

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        for name, m in (("lstm", self.lstm), ("head", self.head)):
            m.load_state_dict({k[len(name) + 1:]: torch.from_numpy(np.array(v))
                               for k, v in arrays.items() if k.startswith(name + ".")})
        self.opt.state.clear()
        for key, v in arrays.items():
            if key.startswith("optim."):
                k, _, i = key[6:].rpartition(".")
                p = self.params[int(i)]
                # torch keeps an optimizer's step count on the CPU (not capturable)
                self.opt.state[p][k] = torch.from_numpy(np.array(v)).to(
                    "cpu" if k == "step" else p.device)

    def close(self) -> None:
        """Nothing to release."""
