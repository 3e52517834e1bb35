"""numba loops for the per-sample norms: LayerNorm rows and GroupNorm (sample, group) blocks.

Both normalise contiguous runs of memory: a LayerNorm row is the trailing ``normalized_shape``
of one sample, a GroupNorm block is one sample's C/G channels times the spatial positions. Each
run is reduced two-pass in float64 while it sits in cache, then normalised in one more pass; the
affine map is per element (LayerNorm, eq. 4 of Ba et al.) or per channel (GroupNorm).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import jit, pjit


@jit
def row_moments(x, r):
    """(mean, M2) of row ``r`` of a C-contiguous 2D array, two-pass in float64."""
    n = x.shape[1]
    s = 0.0
    for j in range(n):
        s += x[r, j]
    mean = s / n
    q = 0.0
    for j in range(n):
        d = x[r, j] - mean
        q += d * d
    return mean, q


@pjit
def layer_forward(x, weight, bias, eps, n_blocks, y, mean_out, inv_std_out):
    """Rows of (R, D): y = (x - mean) * inv_std * w + b; mean/inv_std stored per row."""
    n_r, n_d = x.shape
    for t in prange(n_blocks):
        for r in range(t * n_r // n_blocks, (t + 1) * n_r // n_blocks):
            mean, q = row_moments(x, r)
            mean_out[r] = mean
            inv_std_out[r] = 1.0 / np.sqrt(q / n_d + eps)
            mu, k = mean_out[r], inv_std_out[r]
            for j in range(n_d):
                y[r, j] = (x[r, j] - mu) * k * weight[j] + bias[j]


@pjit
def layer_backward(dy, x, mean, inv_std, weight, n_blocks, dx, dweight_out, dbias_out):
    """Rows of (R, D); per-block parameter-gradient partial sums go to (n_blocks, D)."""
    n_r, n_d = x.shape
    for t in prange(n_blocks):
        coef = np.empty(2, dtype=x.dtype)
        for r in range(t * n_r // n_blocks, (t + 1) * n_r // n_blocks):
            mu, k = mean[r], inv_std[r]
            s1 = 0.0
            s2 = 0.0
            for j in range(n_d):
                g = dy[r, j]
                x_hat = (x[r, j] - mu) * k
                gw = g * weight[j]
                s1 += gw
                s2 += gw * x_hat
                dweight_out[t, j] += g * x_hat
                dbias_out[t, j] += g
            coef[0] = s1 / n_d
            coef[1] = s2 / n_d
            m1, m2 = coef[0], coef[1]
            for j in range(n_d):
                x_hat = (x[r, j] - mu) * k
                dx[r, j] = k * (dy[r, j] * weight[j] - m1 - x_hat * m2)


@pjit
def group_forward(x, weight, bias, groups, spatial, eps, y, mean_out, var_out, inv_std_out):
    """Blocks of (N*G, C/G * S): one per (sample, group); affine per channel."""
    n_blocks, n_m = x.shape
    per_group = n_m // spatial
    for i in prange(n_blocks):
        g = i % groups
        mean, q = row_moments(x, i)
        mean_out[i] = mean
        var_out[i] = q / n_m
        inv_std_out[i] = 1.0 / np.sqrt(q / n_m + eps)
        mu, k = mean_out[i], inv_std_out[i]
        for cg in range(per_group):
            c = g * per_group + cg
            kw = k * weight[c]
            b = bias[c]
            for s in range(cg * spatial, (cg + 1) * spatial):
                y[i, s] = (x[i, s] - mu) * kw + b


@pjit
def group_backward(dy, x, mean, inv_std, weight, groups, spatial, dx, dweight_nc, dbias_nc):
    """Blocks of (N*G, C/G * S); per-(sample, channel) parameter sums go to (N, C)."""
    n_blocks, n_m = x.shape
    per_group = n_m // spatial
    for i in prange(n_blocks):
        n = i // groups
        g = i % groups
        mu, k = mean[i], inv_std[i]
        s1 = 0.0
        s2 = 0.0
        for cg in range(per_group):
            c = g * per_group + cg
            sum_dy = 0.0
            sum_dy_xhat = 0.0
            for s in range(cg * spatial, (cg + 1) * spatial):
                gy = dy[i, s]
                sum_dy += gy
                sum_dy_xhat += gy * ((x[i, s] - mu) * k)
            dweight_nc[n, c] = sum_dy_xhat
            dbias_nc[n, c] = sum_dy
            s1 += weight[c] * sum_dy
            s2 += weight[c] * sum_dy_xhat
        coef = np.empty(2, dtype=x.dtype)
        coef[0] = s1 / n_m
        coef[1] = s2 / n_m
        m1, m2 = coef[0], coef[1]
        for cg in range(per_group):
            w = weight[g * per_group + cg]
            for s in range(cg * spatial, (cg + 1) * spatial):
                x_hat = (x[i, s] - mu) * k
                dx[i, s] = k * (dy[i, s] * w - m1 - x_hat * m2)
