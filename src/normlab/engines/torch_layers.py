"""torch twins of the CNN spec layers and of :func:`.numpy_layers.get_norm`, same state-dict keys.

torch's own layers where they compute the same thing; normlab.torch's ghost BN and Batch Renorm
where torch has none.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import torch as nt
from ..nn.dropout import dropout_mask
from .spec import NORMS, conv_args, group_count, norm_args, renorm_schedule, unknown


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


def torch_norm(name: str, channels: int, spatial: tuple[int, int] | None = (1, 1),
               schedule: tuple | None = None, virtual: int | None = None) -> torch.nn.Module:
    """torch twin of :func:`.numpy_layers.get_norm`."""
    flat = spatial is None
    if name == "batch" and virtual:
        return (nt.GhostBatchNorm1d if flat else nt.GhostBatchNorm2d)(channels, virtual)
    if name == "batch":
        return (torch.nn.BatchNorm1d if flat else torch.nn.BatchNorm2d)(channels)
    if name == "group":
        return torch.nn.GroupNorm(group_count(channels), channels)
    if name == "layer":
        return torch.nn.GroupNorm(1, channels)
    if name == "instance" and not flat:
        return torch.nn.InstanceNorm2d(channels, affine=True)
    if name == "renorm":
        return (nt.BatchRenorm1d if flat else nt.BatchRenorm2d)(
            channels, schedule=renorm_schedule(schedule), virtual_batch_size=virtual)
    if name == "activation" and not flat:
        return TorchActivationBatchNorm(channels * spatial[0] * spatial[1])
    raise ValueError(f"norm: expected one of {NORMS[:-1]}, got {name!r}")


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
