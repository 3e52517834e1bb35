"""Closed-form references that the NumPy engine's tests and the torch extras' tests both
compare against, written once."""

from __future__ import annotations

import numpy as np


def masked_batch_norm(x: np.ndarray, dy: np.ndarray, lengths: list[int], weight: np.ndarray,
                      unbiased: str, eps: float = 1e-5) -> dict[str, np.ndarray]:
    """BN over the unpadded steps of an (N, C, T) batch whose sample i has ``lengths[i]``
    real steps: the real values as one (count, C) batch, their x_hat and the closed-form dx
    (Ioffe & Szegedy 2015, Alg. 1 and its backward), with the variance scaled by
    count / (count - 1) when ``unbiased == "both"``."""
    real = np.concatenate([x[i, :, :k].T for i, k in enumerate(lengths)])      # (count, C)
    dy_real = np.concatenate([dy[i, :, :k].T for i, k in enumerate(lengths)])
    count = len(real)
    s = count / (count - 1) if unbiased == "both" else 1.0
    inv_std = 1 / np.sqrt(s * real.var(0) + eps)
    x_hat = (real - real.mean(0)) * inv_std
    dx_hat = dy_real * weight
    dx = inv_std * (dx_hat - dx_hat.mean(0) - s * x_hat * (dx_hat * x_hat).mean(0))
    return {"real": real, "dy": dy_real, "x_hat": x_hat, "dx": dx}
