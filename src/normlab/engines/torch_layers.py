"""torch twins of the CNN spec layers and of :func:`.numpy_layers.get_norm`, same state-dict keys.

torch's own layers where they compute the same thing; normlab.torch's ghost BN and Batch Renorm
where torch has none.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from .. import torch as nt
from ..nn.dropout import dropout_mask
from .spec import build_norm, conv_args, norm_args, unknown


class TorchActivationBatchNorm(torch.nn.BatchNorm1d):
    """torch twin of :class:`.numpy_layers.ActivationBatchNorm`: BN per (channel, position).

    At module level, so a distributed worker can rebuild it from the spec."""

    def forward(self, x):
        return super().forward(x.reshape(len(x), -1)).reshape(x.shape)


class SeededDropout(torch.nn.Module):
    """torch twin of :class:`normlab.nn.Dropout`: inverted dropout whose masks come from the
    NumPy twin's generator, drawn as that layer draws them.

    torch.nn.Dropout draws from torch's global generator, which no run seeds, so a torch-engine
    run with dropout differed from process to process; with these masks it is fixed by its seed
    and matches the NumPy engine's run.
    """

    def __init__(self, p: float, rng: np.random.Generator):
        super().__init__()
        self.p, self.rng = float(p), rng

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        mask = dropout_mask(self.rng, self.p, tuple(x.shape), np.float32)
        return x * torch.from_numpy(mask).to(device=x.device, dtype=x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _batch_norm(ghost, plain):
    """torch's BN, or normlab's ghost BN when a virtual batch size is given."""
    def build(c, virtual_batch_size=None):
        return ghost(c, virtual_batch_size) if virtual_batch_size else plain(c)
    return build


# the classes spec.NORM_LAYERS builds the torch engine's norms from (numpy_layers.LAYERS' twins)
LAYERS = SimpleNamespace(
    BatchNorm1d=_batch_norm(nt.GhostBatchNorm1d, torch.nn.BatchNorm1d),
    BatchNorm2d=_batch_norm(nt.GhostBatchNorm2d, torch.nn.BatchNorm2d),
    GroupNorm=torch.nn.GroupNorm, InstanceNorm2d=torch.nn.InstanceNorm2d,
    BatchRenorm1d=nt.BatchRenorm1d, BatchRenorm2d=nt.BatchRenorm2d,
    ActivationBatchNorm=lambda c, h, w: TorchActivationBatchNorm(c * h * w))


def torch_norm(name: str, channels: int, spatial: tuple[int, int] | None = (1, 1),
               schedule: tuple | None = None, virtual: int | None = None) -> torch.nn.Module:
    """torch twin of :func:`.numpy_layers.get_norm`."""
    return build_norm(LAYERS, name, channels, spatial, schedule, virtual)


def cnn_layer(layer: tuple) -> torch.nn.Module:
    """torch twin of :func:`.numpy_layers.cnn_layer` (weights come from the NumPy model)."""
    kind = layer[0]
    if kind == "conv":
        c_in, c_out, k, pad, stride = conv_args(layer)
        return torch.nn.Conv2d(c_in, c_out, k, stride=stride, padding=pad)
    if kind in ("norm", "norm1d"):
        return torch_norm(*norm_args(layer))
    if kind == "maxpool":
        return torch.nn.MaxPool2d(layer[1])
    if kind == "flatten":
        return torch.nn.Flatten()
    raise unknown(kind)
