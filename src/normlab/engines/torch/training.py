"""The steps of the experiments' torch trainers, on any device, with NumPy on the outside.

Shared by the single-process trainer (:class:`normlab.engines.torch.TorchTrainer`) and each
replica of :class:`.ddp.DistributedTrainer`, so both train, evaluate and checkpoint
alike. Inputs arrive as NumPy arrays and move to the model's device; outputs and state come back
as CPU NumPy arrays, so a checkpoint written on a GPU (or by P workers) loads anywhere.
"""

from __future__ import annotations

import numpy as np
import torch

MOMENTUM = "optim.momentum_buffer."


def to_device(a: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(a).to(device)


def sgd_step(net, loss_fn, opt, x: np.ndarray, y: np.ndarray,
             device: torch.device) -> torch.Tensor:
    """One training step of ``net`` (a module, or its DDP wrapper); the loss, detached."""
    net.train()
    loss = loss_fn(net(to_device(x, device)), to_device(y, device))
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.detach()


def set_lr(opt, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


@torch.no_grad()
def forward_eval(model, x: np.ndarray, tap: int | None, device: torch.device):
    """(logits, input of layer ``tap`` or None) of a Sequential in eval mode, as NumPy."""
    model.eval()
    tapped = None
    h = to_device(x, device)
    for i, layer in enumerate(model):
        if i == tap:
            tapped = h.cpu().numpy().copy()
        h = layer(h)
    return h.cpu().numpy(), tapped


def state_arrays(model, opt) -> dict[str, np.ndarray]:
    """``model.*`` (the state dict) and ``optim.momentum_buffer.<i>`` as CPU NumPy copies."""
    out = {f"model.{k}": v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}
    for i, p in enumerate(model.parameters()):
        buf = opt.state.get(p, {}).get("momentum_buffer")
        if buf is not None:
            out[f"{MOMENTUM}{i}"] = buf.cpu().numpy().copy()
    return out


def load_state_arrays(model, opt, arrays: dict[str, np.ndarray]) -> None:
    """Inverse of :func:`state_arrays`; tensors go to the device of the parameter they belong to."""
    model.load_state_dict({k[6:]: torch.from_numpy(np.array(v))
                           for k, v in arrays.items() if k.startswith("model.")})
    params = list(model.parameters())
    for k, v in arrays.items():
        if k.startswith(MOMENTUM):
            p = params[int(k[len(MOMENTUM):])]
            opt.state[p]["momentum_buffer"] = torch.from_numpy(np.array(v)).to(p.device)
