"""numba loops for batch norm, one per memory layout.

Two layouts cover every input without a copy:

* ``ncs`` -- a C-contiguous (A, C, B) view: NCHW/NCL/NCDHW as (N, C, H*W...). Each channel is
  A contiguous segments; channels run in parallel and a channel's data (<= ~1 MB for the
  benchmark shapes) stays in L2 between the statistics pass and the normalising pass, so DRAM
  sees x once.
* ``mc`` -- a C-contiguous (M, C) view: (N, C) and channels-last (N, H, W, C). Rows are split
  into blocks (one per thread) and the inner loop runs over the contiguous channels, so it
  vectorises; a per-channel loop with a column stride would be an order of magnitude slower.

Statistics: each segment (or chunk of rows) is reduced two-pass while it sits in L1, and the
segments are merged in float64 with Chan et al.'s formula, so float32 data with |mean| >> std
keeps its variance (no E[x^2] - E[x]^2 anywhere). Inside a segment the sums run in the data
dtype over chunks (see :mod:`.sums`); everything per channel is float64.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import inline, jit, pjit
from .sums import CHUNK, chan_merge, grad_sums, sum64

ROW_CHUNK_BYTES = 32 * 1024   # rows reduced together in the mc layout (L1/L2 resident)


@jit
def _dev_sums_and_next(seg, mu, nxt):
    """(sum(seg - mu), sum((seg - mu)**2), sum(nxt)) in one loop over equally long 1-D views."""
    p = seg.dtype.type(0)
    q = seg.dtype.type(0)
    s = seg.dtype.type(0)
    for b in range(seg.shape[0]):
        d = seg[b] - mu
        p += d
        q += d * d
        s += nxt[b]
    return p, q, s


@pjit
def train_ncs(x, weight, bias, eps, y, mean_out, var_out, inv_std_out, offset_out):
    """Fused training forward on (A, C, B): per channel, moments then y = x_hat*w + b.

    Each segment x[a, c, :] is reduced with the corrected two-pass algorithm (sum; then, with
    mu = the sum's mean in the data dtype, p = sum(x - mu) and q = sum((x - mu)^2) give the
    segment's mean mu + p/n and M2 = q - p^2/n). The deviation pass re-reads the segment from
    L1 and, in the same loop, sums the NEXT segment: a loop that only hit L1 would leave DRAM
    idle, so this keeps one stream from memory going all the time (faster single-threaded,
    same numerics). ``offset_out``: the float64 mean minus ``mean_out`` (the
    mean rounded to the data dtype). y centres on ``mean_out`` (x - mean_out is exact in the
    data dtype) and takes ``offset_out`` out in the shift: float32 at 1e6 rounds the mean by up
    to 0.03, which times inv_std would move every output alike (BN/LN/GN/IN outputs were ~0.03
    off the float64 answer before; the backward does the same, see :func:`backward_ncs`).
    """
    n_a, n_c, n_b = x.shape
    for c in prange(n_c):
        count = 0.0
        mean = 0.0
        m2 = 0.0
        s_next = sum64(x[0, c])
        for a in range(n_a):
            seg_mean = s_next / n_b
            mu = x.dtype.type(seg_mean)
            nxt = min(a + 1, n_a - 1)   # the last segment re-sums itself (harmless, L1)
            p = 0.0
            q = 0.0
            s_next = 0.0
            for lo in range(0, n_b, CHUNK):
                p_chunk, q_chunk, s_chunk = _dev_sums_and_next(x[a, c, lo:lo + CHUNK], mu,
                                                               x[nxt, c, lo:lo + CHUNK])
                p += p_chunk
                q += q_chunk
                s_next += s_chunk
            dev = p / n_b
            seg_mean = float(mu) + dev
            # never below 0: for near-constant data the rounding of q can exceed the true M2
            q = max(q - dev * p, 0.0)
            count, mean, m2 = chan_merge(count, mean, m2, n_b, seg_mean, q)
        var = m2 / count
        inv_std = 1.0 / np.sqrt(var + eps)
        mean_out[c] = mean
        var_out[c] = var
        inv_std_out[c] = inv_std
        offset_out[c] = mean - float(mean_out[c])
        mu = x.dtype.type(mean)
        k_64 = weight[c] * inv_std
        k = x.dtype.type(k_64)
        t = x.dtype.type(bias[c] - offset_out[c] * k_64)   # centres on the exact mean
        for a in range(n_a):
            for b in range(n_b):
                y[a, c, b] = (x[a, c, b] - mu) * k + t


@inline
def affine_value(x, center, scale, shift):
    """(x - center) * scale + shift: the eval map of the affine loops here and of
    :mod:`.fused`, one expression so that they round alike."""
    return (x - center) * scale + shift


@pjit
def affine_ncs(x, center, scale, shift, y):
    """y = (x - center) * scale + shift per channel of (A, C, B); one read, one write."""
    n_a, n_c, n_b = x.shape
    for i in prange(n_a * n_c):
        a = i // n_c
        c = i - a * n_c
        mu, k, t = center[c], scale[c], shift[c]
        for b in range(n_b):
            y[a, c, b] = affine_value(x[a, c, b], mu, k, t)


@pjit
def backward_ncs(dy, s, center, offset, gain, inv_std, weight, dx, dweight_out, dbias_out):
    """Backward on (A, C, B) with x_hat = (s - center - offset) * gain: one sum pass, one dx
    pass. ``offset`` is what the forward's float64 mean exceeded ``center`` (that mean in the
    data dtype) by: inv_std times it would shift every x_hat alike, which matters where inv_std
    is large (the per-sample norms do the same, see rows_loops.layer_backward)."""
    n_a, n_c, n_b = dy.shape
    n = n_a * n_b
    for c in prange(n_c):
        mu = dy.dtype.type(center[c])
        off = offset[c] + (float(center[c]) - float(mu))
        sum_dy = 0.0
        sum_dy_s = 0.0
        for a in range(n_a):
            p, q = grad_sums(dy[a, c], s[a, c], mu)
            sum_dy += p
            sum_dy_s += q
        dweight = gain[c] * (sum_dy_s - off * sum_dy)
        dbias_out[c] = sum_dy
        dweight_out[c] = dweight
        # dx = w*inv_std * (dy - sum(dy)/n - x_hat * sum(dy*x_hat)/n), expanded in (dy, s),
        # with x_hat = (s - mu - off) * gain: the -off folds into the constant term
        a_c = weight[c] * inv_std[c]
        k1 = dy.dtype.type(a_c)
        k2_64 = -a_c * gain[c] * dweight / n
        k2 = dy.dtype.type(k2_64)
        k3 = dy.dtype.type(-a_c * sum_dy / n - k2_64 * off)
        for a in range(n_a):
            for b in range(n_b):
                dx[a, c, b] = k1 * dy[a, c, b] + k2 * (s[a, c, b] - mu) + k3


@jit
def chunk_rows(n_c, itemsize):
    """Rows per mc chunk: about ROW_CHUNK_BYTES, 8..256 rows, a multiple of 4 (the row-unroll
    of the column sums). The float32 column sums of a chunk run down its rows, so the 256 cap
    bounds how many values each accumulates."""
    return min(256, max(8, ROW_CHUNK_BYTES // (n_c * itemsize))) // 4 * 4


# The column loops below take four rows per step: the accumulators s[c], p[c], q[c] live in
# memory, and loading/storing them once per four rows instead of every row is what makes these
# loops run at the speed of reading x.

@jit
def _col_sums(x, r0, r1, s):
    """s[c] = sum(x[r0:r1, c]) in s's dtype."""
    s[:] = 0
    r4 = r0 + (r1 - r0) // 4 * 4
    for r in range(r0, r4, 4):
        a0, a1, a2, a3 = x[r], x[r + 1], x[r + 2], x[r + 3]
        for c in range(x.shape[1]):
            s[c] += (a0[c] + a1[c]) + (a2[c] + a3[c])
    for r in range(r4, r1):
        a0 = x[r]
        for c in range(x.shape[1]):
            s[c] += a0[c]


@jit
def _col_dev_sums(x, r0, r1, m, p, q):
    """p[c] = sum(x[r0:r1, c] - m[c]) and q[c] = sum((x[r0:r1, c] - m[c])**2)."""
    p[:] = 0
    q[:] = 0
    r4 = r0 + (r1 - r0) // 4 * 4
    for r in range(r0, r4, 4):
        a0, a1, a2, a3 = x[r], x[r + 1], x[r + 2], x[r + 3]
        for c in range(x.shape[1]):
            d0, d1, d2, d3 = a0[c] - m[c], a1[c] - m[c], a2[c] - m[c], a3[c] - m[c]
            p[c] += (d0 + d1) + (d2 + d3)
            q[c] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
    for r in range(r4, r1):
        a0 = x[r]
        for c in range(x.shape[1]):
            d0 = a0[c] - m[c]
            p[c] += d0
            q[c] += d0 * d0


@jit
def _col_grad_sums(dy, s, r0, r1, m, p, q):
    """p[c] = sum(dy[r0:r1, c]) and q[c] = sum(dy[r0:r1, c] * (s[r0:r1, c] - m[c]))."""
    p[:] = 0
    q[:] = 0
    r4 = r0 + (r1 - r0) // 4 * 4
    for r in range(r0, r4, 4):
        g0, g1, g2, g3 = dy[r], dy[r + 1], dy[r + 2], dy[r + 3]
        a0, a1, a2, a3 = s[r], s[r + 1], s[r + 2], s[r + 3]
        for c in range(dy.shape[1]):
            p[c] += (g0[c] + g1[c]) + (g2[c] + g3[c])
            q[c] += ((g0[c] * (a0[c] - m[c]) + g1[c] * (a1[c] - m[c]))
                     + (g2[c] * (a2[c] - m[c]) + g3[c] * (a3[c] - m[c])))
    for r in range(r4, r1):
        g0, a0 = dy[r], s[r]
        for c in range(dy.shape[1]):
            p[c] += g0[c]
            q[c] += g0[c] * (a0[c] - m[c])


@pjit
def train_mc(x, weight, bias, eps, n_blocks, y, mean_out, var_out, inv_std_out, offset_out):
    """Training forward on (M, C): per-column moments (chunked two-pass + Chan merge), then
    y = x_hat * w + b, in one call (small inputs pay one dispatch, not three).

    Per chunk of rows, in the data dtype and vectorised across columns: s = sum(x), then with
    m' = s/n the corrected two-pass sums p = sum(x - m'), q = sum((x - m')^2), giving the chunk's
    mean m' + p/n and M2 = q - p^2/n (Chan, Golub & LeVeque 1983); chunks merge in float64.
    """
    n_m, n_c = x.shape
    rows = chunk_rows(n_c, x.itemsize)
    counts = np.zeros(n_blocks)
    means = np.zeros((n_blocks, n_c))
    m2s = np.zeros((n_blocks, n_c))
    for t in prange(n_blocks):
        lo = t * n_m // n_blocks
        hi = (t + 1) * n_m // n_blocks
        s = np.empty(n_c, dtype=x.dtype)
        p = np.empty(n_c, dtype=x.dtype)
        q = np.empty(n_c, dtype=x.dtype)
        count = 0.0
        for r0 in range(lo, hi, rows):
            r1 = min(r0 + rows, hi)
            n_seg = r1 - r0
            _col_sums(x, r0, r1, s)
            s /= x.dtype.type(n_seg)   # now the chunk's provisional mean m'
            _col_dev_sums(x, r0, r1, s, p, q)
            for c in range(n_c):
                dev = float(p[c]) / n_seg
                seg_m2 = max(float(q[c]) - dev * float(p[c]), 0.0)
                _, means[t, c], m2s[t, c] = chan_merge(count, means[t, c], m2s[t, c], n_seg,
                                                       float(s[c]) + dev, seg_m2)
            count += n_seg
        counts[t] = count
    count = 0.0
    mean = np.zeros(n_c)
    m2 = np.zeros(n_c)
    for t in range(n_blocks):
        if counts[t] == 0:
            continue
        for c in range(n_c):
            _, mean[c], m2[c] = chan_merge(count, mean[c], m2[c], counts[t], means[t, c],
                                           m2s[t, c])
        count += counts[t]
    center = np.empty(n_c, dtype=x.dtype)
    scale = np.empty(n_c, dtype=x.dtype)
    shift = np.empty(n_c, dtype=x.dtype)
    for c in range(n_c):
        var = m2[c] / count
        inv_std = 1.0 / np.sqrt(var + eps)
        mean_out[c] = mean[c]
        var_out[c] = var
        inv_std_out[c] = inv_std
        offset_out[c] = mean[c] - float(mean_out[c])
        center[c] = mean[c]
        scale[c] = weight[c] * inv_std
        shift[c] = bias[c] - offset_out[c] * (weight[c] * inv_std)   # as in train_ncs
    # The row affine is written out here and in affine_mc: as one inlined helper numba
    # vectorised it more slowly (this forward on a (32, 64, 56, 56) NHWC batch: ~5%).
    for t in prange(n_blocks):
        for r in range(t * n_m // n_blocks, (t + 1) * n_m // n_blocks):
            x_row, y_row = x[r], y[r]
            for c in range(n_c):
                y_row[c] = (x_row[c] - center[c]) * scale[c] + shift[c]


@pjit
def affine_mc(x, center, scale, shift, n_blocks, y):
    """y = (x - center) * scale + shift per column of (M, C), rows split into blocks."""
    n_m, n_c = x.shape
    for t in prange(n_blocks):
        for r in range(t * n_m // n_blocks, (t + 1) * n_m // n_blocks):
            x_row, y_row = x[r], y[r]
            for c in range(n_c):
                y_row[c] = affine_value(x_row[c], center[c], scale[c], shift[c])


@pjit
def backward_mc(dy, s, center, offset, gain, inv_std, weight, n_blocks, dx, dweight_out,
                dbias_out):
    """Backward on (M, C) with x_hat = (s - center - offset) * gain (as in
    :func:`backward_ncs`): block sums, then the dx pass.

    Column sums run in the data dtype over chunks of rows (as in train_mc), added in float64.
    """
    n_m, n_c = dy.shape
    rows = chunk_rows(n_c, dy.itemsize)
    sums = np.zeros((n_blocks, 2, n_c))   # sum(dy), sum(dy (s - mu))
    mu = center.astype(dy.dtype)
    for t in prange(n_blocks):
        p = np.empty(n_c, dtype=dy.dtype)
        q = np.empty(n_c, dtype=dy.dtype)
        hi = (t + 1) * n_m // n_blocks
        for r0 in range(t * n_m // n_blocks, hi, rows):
            _col_grad_sums(dy, s, r0, min(r0 + rows, hi), mu, p, q)
            for c in range(n_c):
                sums[t, 0, c] += p[c]
                sums[t, 1, c] += q[c]
    k_dy = np.empty(n_c, dtype=dy.dtype)
    k_s = np.empty(n_c, dtype=dy.dtype)
    k_0 = np.empty(n_c, dtype=dy.dtype)
    for c in range(n_c):
        sum_dy = 0.0
        sum_dy_s = 0.0
        for t in range(n_blocks):
            sum_dy += sums[t, 0, c]
            sum_dy_s += sums[t, 1, c]
        off = offset[c] + (float(center[c]) - float(mu[c]))
        dweight = gain[c] * (sum_dy_s - off * sum_dy)
        dbias_out[c] = sum_dy
        dweight_out[c] = dweight
        a_c = weight[c] * inv_std[c]
        k_dy[c] = a_c
        k2 = -a_c * gain[c] * dweight / n_m
        k_s[c] = k2
        k_0[c] = -a_c * sum_dy / n_m - k2 * off   # x_hat = (s - mu - off) * gain
    for t in prange(n_blocks):
        for r in range(t * n_m // n_blocks, (t + 1) * n_m // n_blocks):
            g_row = dy[r]
            s_row = s[r]
            dx_row = dx[r]
            for c in range(n_c):
                dx_row[c] = k_dy[c] * g_row[c] + k_s[c] * (s_row[c] - mu[c]) + k_0[c]
