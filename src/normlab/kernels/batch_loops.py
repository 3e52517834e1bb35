"""numba loops for batch norm, one per memory layout.

Two layouts cover every input without a copy:

* ``ncs`` -- a C-contiguous (A, C, B) view: NCHW/NCL/NCDHW as (N, C, H*W...). Each channel is
  A contiguous segments; channels run in parallel and a channel's data (<= ~1 MB for the
  benchmark shapes) stays in L2 between the statistics pass and the normalising pass, so DRAM
  sees x once.
* ``mc`` -- a C-contiguous (M, C) view: (N, C) and channels-last (N, H, W, C). Rows are split
  into blocks (one per thread) and the inner loop runs over the contiguous channels, so it
  vectorises; a per-channel loop with a column stride would be an order of magnitude slower.

Statistics: each segment (or chunk of rows) is reduced two-pass while it sits in L1, in float64,
and the segments are merged with Chan et al.'s formula, so float32 data with |mean| >> std keeps
its variance (no E[x^2] - E[x]^2 anywhere). Backward sums are accumulated in float64 too.

Per-channel constants are handed to the inner loops in the data dtype (via small scratch arrays)
so float32 loops stay float32-wide.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import pjit

ROW_CHUNK_BYTES = 16 * 1024   # rows reduced together in the mc layout: about half of L1


@pjit
def train_ncs(x, weight, bias, eps, y, mean_out, var_out):
    """Fused training forward on (A, C, B): per channel, moments then y = x_hat*w + b."""
    n_a, n_c, n_b = x.shape
    center = np.empty(n_c, dtype=x.dtype)
    scale = np.empty(n_c, dtype=x.dtype)
    shift = np.empty(n_c, dtype=x.dtype)
    for c in prange(n_c):
        count = 0.0
        mean = 0.0
        m2 = 0.0
        for a in range(n_a):
            s = 0.0
            for b in range(n_b):
                s += x[a, c, b]
            seg_mean = s / n_b
            q = 0.0
            for b in range(n_b):
                d = x[a, c, b] - seg_mean
                q += d * d
            total = count + n_b
            delta = seg_mean - mean
            mean += delta * n_b / total
            m2 += q + delta * delta * count * n_b / total
            count = total
        var = m2 / count
        inv_std = 1.0 / np.sqrt(var + eps)
        mean_out[c] = mean
        var_out[c] = var
        center[c] = mean
        scale[c] = weight[c] * inv_std
        shift[c] = bias[c]
        mu, k, t = center[c], scale[c], shift[c]
        for a in range(n_a):
            for b in range(n_b):
                y[a, c, b] = (x[a, c, b] - mu) * k + t


@pjit
def affine_ncs(x, center, scale, shift, y):
    """y = (x - center) * scale + shift per channel of (A, C, B); one read, one write."""
    n_a, n_c, n_b = x.shape
    for i in prange(n_a * n_c):
        a = i // n_c
        c = i - a * n_c
        mu, k, t = center[c], scale[c], shift[c]
        for b in range(n_b):
            y[a, c, b] = (x[a, c, b] - mu) * k + t


@pjit
def backward_ncs(dy, s, center, gain, inv_std, weight, dx, dweight_out, dbias_out):
    """Backward on (A, C, B) with x_hat = (s - center) * gain: one sum pass, one dx pass."""
    n_a, n_c, n_b = dy.shape
    n = n_a * n_b
    mu_c = np.empty(n_c, dtype=dy.dtype)
    k_dy = np.empty(n_c, dtype=dy.dtype)
    k_s = np.empty(n_c, dtype=dy.dtype)
    k_0 = np.empty(n_c, dtype=dy.dtype)
    for c in prange(n_c):
        mu_c[c] = center[c]
        mu = mu_c[c]
        sum_dy = 0.0
        sum_dy_s = 0.0
        for a in range(n_a):
            for b in range(n_b):
                g = dy[a, c, b]
                sum_dy += g
                sum_dy_s += g * (s[a, c, b] - mu)
        dweight = gain[c] * sum_dy_s
        dbias_out[c] = sum_dy
        dweight_out[c] = dweight
        # dx = w*inv_std * (dy - sum(dy)/n - x_hat * sum(dy*x_hat)/n), expanded in (dy, s)
        a_c = weight[c] * inv_std[c]
        k_dy[c] = a_c
        k_s[c] = -a_c * gain[c] * dweight / n
        k_0[c] = -a_c * sum_dy / n
        k1, k2, k3 = k_dy[c], k_s[c], k_0[c]
        for a in range(n_a):
            for b in range(n_b):
                dx[a, c, b] = k1 * dy[a, c, b] + k2 * (s[a, c, b] - mu) + k3


@pjit
def moments_mc(x, n_blocks, mean_out, var_out):
    """Per-column mean and biased variance of (M, C): chunked two-pass + Chan merge."""
    n_m, n_c = x.shape
    rows = max(1, ROW_CHUNK_BYTES // (n_c * x.itemsize))
    counts = np.zeros(n_blocks)
    means = np.zeros((n_blocks, n_c))
    m2s = np.zeros((n_blocks, n_c))
    for t in prange(n_blocks):
        lo = t * n_m // n_blocks
        hi = (t + 1) * n_m // n_blocks
        seg_mean = np.empty(n_c)
        seg_q = np.empty(n_c)
        count = 0.0
        for r0 in range(lo, hi, rows):
            r1 = min(r0 + rows, hi)
            n_seg = r1 - r0
            seg_mean[:] = 0.0
            for r in range(r0, r1):
                for c in range(n_c):
                    seg_mean[c] += x[r, c]
            for c in range(n_c):
                seg_mean[c] /= n_seg
            seg_q[:] = 0.0
            for r in range(r0, r1):
                for c in range(n_c):
                    d = x[r, c] - seg_mean[c]
                    seg_q[c] += d * d
            total = count + n_seg
            for c in range(n_c):
                delta = seg_mean[c] - means[t, c]
                means[t, c] += delta * n_seg / total
                m2s[t, c] += seg_q[c] + delta * delta * count * n_seg / total
            count = total
        counts[t] = count
    count = 0.0
    for c in range(n_c):
        mean_out[c] = 0.0
        var_out[c] = 0.0   # holds M2 until the end
    for t in range(n_blocks):
        if counts[t] == 0:
            continue
        total = count + counts[t]
        for c in range(n_c):
            delta = means[t, c] - mean_out[c]
            mean_out[c] += delta * counts[t] / total
            var_out[c] += m2s[t, c] + delta * delta * count * counts[t] / total
        count = total
    for c in range(n_c):
        var_out[c] /= count


@pjit
def affine_mc(x, center, scale, shift, n_blocks, y):
    """y = (x - center) * scale + shift per column of (M, C), rows split into blocks."""
    n_m, n_c = x.shape
    for t in prange(n_blocks):
        for r in range(t * n_m // n_blocks, (t + 1) * n_m // n_blocks):
            for c in range(n_c):
                y[r, c] = (x[r, c] - center[c]) * scale[c] + shift[c]


@pjit
def backward_mc(dy, s, center, gain, inv_std, weight, n_blocks, dx, dweight_out, dbias_out):
    """Backward on (M, C) with x_hat = (s - center) * gain: block sums, then the dx pass."""
    n_m, n_c = dy.shape
    sums_dy = np.zeros((n_blocks, n_c))
    sums_dy_s = np.zeros((n_blocks, n_c))
    for t in prange(n_blocks):
        for r in range(t * n_m // n_blocks, (t + 1) * n_m // n_blocks):
            for c in range(n_c):
                g = dy[r, c]
                sums_dy[t, c] += g
                sums_dy_s[t, c] += g * (s[r, c] - center[c])
    k_dy = np.empty(n_c, dtype=dy.dtype)
    k_s = np.empty(n_c, dtype=dy.dtype)
    k_0 = np.empty(n_c, dtype=dy.dtype)
    for c in range(n_c):
        sum_dy = 0.0
        sum_dy_s = 0.0
        for t in range(n_blocks):
            sum_dy += sums_dy[t, c]
            sum_dy_s += sums_dy_s[t, c]
        dweight = gain[c] * sum_dy_s
        dbias_out[c] = sum_dy
        dweight_out[c] = dweight
        a_c = weight[c] * inv_std[c]
        k_dy[c] = a_c
        k_s[c] = -a_c * gain[c] * dweight / n_m
        k_0[c] = -a_c * sum_dy / n_m
    for t in prange(n_blocks):
        for r in range(t * n_m // n_blocks, (t + 1) * n_m // n_blocks):
            for c in range(n_c):
                dx[r, c] = k_dy[c] * dy[r, c] + k_s[c] * (s[r, c] - center[c]) + k_0[c]
