"""numba loops for the per-sample norms: LayerNorm rows and GroupNorm (sample, group) blocks.

Both normalise contiguous runs of memory: a LayerNorm row is the trailing ``normalized_shape``
of one sample, a GroupNorm block is one sample's C/G channels times the spatial positions. Each
run is reduced two-pass while it sits in cache (:func:`.sums.moments`: data-dtype lanes, float64
totals), then normalised in one more pass; the affine map is per element (LayerNorm, eq. 4 of
Ba et al.) or per channel (GroupNorm). Loops run over 1-D views indexed from 0 (see
:mod:`.sums` for why).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import pjit
from .sums import CHUNK, grad_sums, moments

# LayerNorm's parameter gradients sum down the rows; each thread keeps data-dtype partial sums
# and adds them into its float64 totals every FLUSH_ROWS rows (the same accuracy argument as
# CHUNK in .sums, across rows instead of along them).
FLUSH_ROWS = 256


@pjit
def layer_forward(x, weight, bias, eps, n_blocks, y, mean_out, inv_std_out, offset_out):
    """Rows of (R, D): y = x_hat * w + b; mean/inv_std stored per row, and ``offset_out``: the
    float64 mean minus the stored one. x_hat = (x - mean) * inv_std - offset * inv_std, as in
    :func:`layer_backward` (without the last term float32 rows at 1e6 were ~0.03 off)."""
    n_r, n_d = x.shape
    for t in prange(n_blocks):
        for r in range(t * n_r // n_blocks, (t + 1) * n_r // n_blocks):
            mean, m2 = moments(x[r])
            mean_out[r] = mean
            offset_out[r] = mean - float(mean_out[r])
            inv_std_out[r] = 1.0 / np.sqrt(m2 / n_d + eps)
            mu, k = mean_out[r], inv_std_out[r]
            e = x.dtype.type(offset_out[r] * k)
            x_row, y_row = x[r], y[r]
            for j in range(n_d):
                y_row[j] = ((x_row[j] - mu) * k - e) * weight[j] + bias[j]


@pjit
def layer_backward(dy, x, mean, offset, inv_std, weight, n_blocks, dx, dweight_out, dbias_out):
    """Rows of (R, D); per-block parameter-gradient partial sums go to (n_blocks, D).

    x_hat = (x - mean) * inv_std - e with e = offset * inv_std: ``mean`` is rounded to the data
    dtype, and that rounding times inv_std would shift every x_hat alike. It matters where
    inv_std is large: a 2-value row with variance 30 eps gave dx off by 4e-4 without it, 4e-7
    with it.
    """
    n_r, n_d = x.shape
    for t in prange(n_blocks):
        dw_part = np.zeros(n_d, dtype=x.dtype)
        db_part = np.zeros(n_d, dtype=x.dtype)
        lo_r, hi_r = t * n_r // n_blocks, (t + 1) * n_r // n_blocks
        for r in range(lo_r, hi_r):
            mu, k = mean[r], inv_std[r]
            e = x.dtype.type(offset[r] * k)
            s1 = 0.0   # sum(dy * w)
            s2 = 0.0   # sum(dy * w * x_hat)
            for lo in range(0, n_d, CHUNK):
                g, x_row, w = dy[r, lo:lo + CHUNK], x[r, lo:lo + CHUNK], weight[lo:lo + CHUNK]
                dw, db = dw_part[lo:lo + CHUNK], db_part[lo:lo + CHUNK]
                a1 = x.dtype.type(0)
                a2 = x.dtype.type(0)
                for j in range(g.shape[0]):
                    x_hat = (x_row[j] - mu) * k - e
                    gw = g[j] * w[j]
                    a1 += gw
                    a2 += gw * x_hat
                    dw[j] += g[j] * x_hat
                    db[j] += g[j]
                s1 += a1
                s2 += a2
            m1 = x.dtype.type(s1 / n_d)
            m2 = x.dtype.type(s2 / n_d)
            g, x_row, dx_row = dy[r], x[r], dx[r]
            for j in range(n_d):
                x_hat = (x_row[j] - mu) * k - e
                dx_row[j] = k * (g[j] * weight[j] - m1 - x_hat * m2)
            if (r - lo_r + 1) % FLUSH_ROWS == 0 or r == hi_r - 1:
                for j in range(n_d):
                    dweight_out[t, j] += dw_part[j]
                    dbias_out[t, j] += db_part[j]
                dw_part[:] = 0
                db_part[:] = 0


@pjit
def group_forward(x, weight, bias, groups, spatial, eps, y, mean_out, var_out, inv_std_out,
                  offset_out):
    """Blocks of (N*G, C/G * S): one per (sample, group); affine per channel."""
    n_blocks, n_m = x.shape
    per_group = n_m // spatial
    for i in prange(n_blocks):
        g = i % groups
        mean, m2 = moments(x[i])
        mean_out[i] = mean
        offset_out[i] = mean - float(mean_out[i])
        var_out[i] = m2 / n_m
        inv_std_out[i] = 1.0 / np.sqrt(m2 / n_m + eps)
        mu, k = mean_out[i], inv_std_out[i]
        for cg in range(per_group):
            c = g * per_group + cg
            kw = k * weight[c]
            # x_hat = (x - mu - offset) * k: the offset goes into the shift, as in train_ncs
            b = x.dtype.type(bias[c] - offset_out[i] * float(kw))
            x_seg = x[i, cg * spatial:(cg + 1) * spatial]
            y_seg = y[i, cg * spatial:(cg + 1) * spatial]
            for s in range(spatial):
                y_seg[s] = (x_seg[s] - mu) * kw + b


@pjit
def group_backward(dy, x, mean, offset, inv_std, weight, groups, spatial, dx, dweight_nc,
                   dbias_nc):
    """Blocks of (N*G, C/G * S); per-(sample, channel) parameter sums go to (N, C).

    x_hat = (x - mean - offset) * inv_std, as in :func:`layer_backward`.
    """
    n_blocks, n_m = x.shape
    per_group = n_m // spatial
    for i in prange(n_blocks):
        n = i // groups
        g = i % groups
        mu, k = mean[i], inv_std[i]
        off = offset[i]
        s1 = 0.0
        s2 = 0.0
        for cg in range(per_group):
            c = g * per_group + cg
            sl = slice(cg * spatial, (cg + 1) * spatial)
            sum_dy, sum_dy_s = grad_sums(dy[i, sl], x[i, sl], mu)
            sum_dy_xhat = k * (sum_dy_s - off * sum_dy)
            dweight_nc[n, c] = sum_dy_xhat
            dbias_nc[n, c] = sum_dy
            s1 += weight[c] * sum_dy
            s2 += weight[c] * sum_dy_xhat
        m2 = s2 / n_m
        m1 = x.dtype.type(s1 / n_m - k * off * m2)   # folds the -k off of x_hat into m1
        m2 = x.dtype.type(m2)
        for cg in range(per_group):
            w = weight[g * per_group + cg]
            x_seg = x[i, cg * spatial:(cg + 1) * spatial]
            g_seg = dy[i, cg * spatial:(cg + 1) * spatial]
            dx_seg = dx[i, cg * spatial:(cg + 1) * spatial]
            for s in range(spatial):
                x_hat = (x_seg[s] - mu) * k
                dx_seg[s] = k * (g_seg[s] * w - m1 - x_hat * m2)
