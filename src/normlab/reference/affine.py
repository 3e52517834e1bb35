"""The affine step every family ends with: y = gamma * x_hat + beta (Ioffe & Szegedy 2015,
Alg. 1, line 4; Ba et al. 2016, eq. 4; Wu & He 2018, eq. 2)."""

from __future__ import annotations

import numpy as np

from ..core.shapes import per_channel


def affine(x_hat: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None,
           channelwise: bool) -> np.ndarray:
    """A new array ``weight * x_hat + bias``; ``channelwise``: the parameters are (C,) vectors
    over dim 1 (batch, group, instance norm), else they broadcast as they are (layer norm's
    trailing dims)."""
    def view(v: np.ndarray) -> np.ndarray:
        return per_channel(v, x_hat.ndim) if channelwise else v

    y = x_hat * view(weight) if weight is not None else x_hat.copy()
    if bias is not None:
        y += view(bias)
    return y
