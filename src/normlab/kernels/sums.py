"""Sums over 1-D runs of memory that every kernel shares: float-dtype lanes, float64 totals.

Sums run in the data dtype (float32: twice the SIMD lanes of float64) over chunks of at most
CHUNK values, and the chunk sums are added in float64: a float32 chunk sum carries at most
~CHUNK/lanes * 2**-24 relative error (~1e-5 worst case, ~1e-7 typical), the float64 total none
worth counting, so long runs lose nothing to the narrower accumulator.

The helpers take 1-D views and index them from 0: with an index that starts at a computed
offset LLVM cannot rule out a negative index, keeps numba's wraparound check inside the loop and
stops vectorising it.
"""

from __future__ import annotations

from ._jit import inline, jit

CHUNK = 4096


@jit
def chunk_sum(seg):
    """sum(seg) in the data dtype; ``seg`` holds at most CHUNK values."""
    s = seg.dtype.type(0)
    for b in range(seg.shape[0]):
        s += seg[b]
    return s


@jit
def sum64(seg):
    """sum(seg) as a float64, chunk by chunk."""
    s = 0.0
    for lo in range(0, seg.shape[0], CHUNK):
        s += chunk_sum(seg[lo:lo + CHUNK])
    return s


@jit
def moments(seg):
    """(mean, M2) of a 1-D run: two-pass, corrected for the rounding of the mean.

    With mu = the float64 mean rounded to the data dtype, p = sum(seg - mu) and
    q = sum((seg - mu)^2) give mean = mu + p/n and M2 = q - p^2/n exactly in real arithmetic
    (Chan, Golub & LeVeque 1983's corrected two-pass algorithm).
    """
    n = seg.shape[0]
    mu = seg.dtype.type(sum64(seg) / n)
    p = 0.0
    q = 0.0
    for lo in range(0, n, CHUNK):
        part = seg[lo:lo + CHUNK]
        p_chunk = seg.dtype.type(0)
        q_chunk = seg.dtype.type(0)
        for b in range(part.shape[0]):
            d = part[b] - mu
            p_chunk += d
            q_chunk += d * d
        p += p_chunk
        q += q_chunk
    dev = p / n
    return float(mu) + dev, max(q - dev * p, 0.0)


@inline
def chan_merge(count, mean, m2, n, seg_mean, seg_m2):
    """(count, mean, M2) merged with a segment's (n, mean, M2): Chan, Golub & LeVeque 1979,
    mean += delta * n / total and M2 += M2_seg + delta^2 * count * n / total, with
    delta = seg_mean - mean. No sums of squares, so nothing cancels."""
    total = count + n
    delta = seg_mean - mean
    return total, mean + delta * n / total, m2 + (seg_m2 + delta * delta * count * n / total)


@jit
def grad_sums(g, seg, mu):
    """(sum(g), sum(g * (seg - mu))) of two equally long 1-D runs, as float64."""
    p = 0.0
    q = 0.0
    for lo in range(0, g.shape[0], CHUNK):
        g_part = g[lo:lo + CHUNK]
        s_part = seg[lo:lo + CHUNK]
        p_chunk = g.dtype.type(0)
        q_chunk = g.dtype.type(0)
        for b in range(g_part.shape[0]):
            p_chunk += g_part[b]
            q_chunk += g_part[b] * (s_part[b] - mu)
        p += p_chunk
        q += q_chunk
    return p, q

