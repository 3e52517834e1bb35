"""The data movement around a convolution's matrix products, as compiled loops.

Layout: the patch matrix is channel-major, ``cols`` (C*kh*kw, N*Ho*Wo) with row
k = (c*kh + i)*kw + j and column (n*Ho + oh)*Wo + ow (Caffe's im2col, batched), so that every
loop here copies runs of consecutive output columns -- vectorised, unlike the pixel-major
(N*Ho*Wo, C*kh*kw) matrix of the readable path, whose rows are only C*kh*kw = 9..144 long and
whose fill is a scatter. The matrix products then are ``W @ cols`` (forward), ``dY @ cols^T``
(weight gradient) and ``W^T @ dY`` (input gradient), all with the long N*Ho*Wo dimension as the
BLAS "n" or "k"; the outputs (C_out, N*Ho*Wo) are turned into NCHW by one transposing copy.

Padding is never materialised: taps outside the input read as 0 (and are dropped in col2im).
For stride 1 with (Ho, Wo) == (H, W) -- the "same" convolutions of the experiments' CNNs --
the input is first copied channel-major, (C, margin + N*H*W + margin): there a tap's whole row
of the patch matrix is its channel's N planes shifted by one constant offset, so the row is one
pass that takes the shifted value where the tap lies inside the image and 0 elsewhere (a
per-tap mask of one plane; :func:`_walk_planes`). One copy per (tap, image) followed by a pass
zeroing the edges spends twice as long on that scattered zeroing as on the copy.
"""

from __future__ import annotations

import numpy as np

from ._jit import jit


@jit
def _valid(count, stride, start, width):
    """[lo, hi): the output columns ow < count whose input column ow*stride + start lies in
    [0, width); lo <= hi <= count."""
    lo = 0 if start >= 0 else (-start + stride - 1) // stride
    last = width - 1 - start
    hi = last // stride + 1 if last >= 0 else 0
    lo = min(lo, count)
    return lo, min(max(hi, lo), count)


@jit
def _tap(k, kh, kw, ph, pw, dh, dw):
    """Row k = (c*kh + i)*kw + j of the patch matrix: channel c and the offset (i0, j0) of its
    input pixel from (oh*sh, ow*sw)."""
    c, ij = divmod(k, kh * kw)
    i, j = divmod(ij, kw)
    return c, i * dh - ph, j * dw - pw


@jit
def _plane_taps(kh, kw, ph, pw, dh, dw, n_, h, w):
    """Per tap t = i*kw + j of a stride-1 "same" convolution: its flat offset in the plane
    (``shifts[t]``) and which of the N*H*W outputs it reads inside their image (``inside[t]``,
    one plane's pattern repeated N times, so the passes over a row need no per-image loop)."""
    taps, hw = kh * kw, h * w
    shifts = np.empty(taps, np.int64)
    plane = np.empty(hw, np.bool_)
    inside = np.empty((taps, n_ * hw), np.bool_)
    for t in range(taps):
        _, i0, j0 = _tap(t, kh, kw, ph, pw, dh, dw)
        shifts[t] = i0 * w + j0
        for oh in range(h):
            for ow in range(w):
                plane[oh * w + ow] = 0 <= oh + i0 < h and 0 <= ow + j0 < w
        for n in range(n_):
            run = inside[t, n * hw:]
            for q in range(hw):
                run[q] = plane[q]
    return shifts, inside


@jit
def _copy_planes(flat, planes, back):
    """planes[c, n*S:(n+1)*S] = flat[n, c] (``back``: flat[n, c] += that run instead)."""
    n_, c_, s = flat.shape
    for n in range(n_):
        for c in range(c_):
            image, run = flat[n, c], planes[c, n * s:]
            if back:
                for q in range(s):
                    image[q] += run[q]
            else:
                for q in range(s):
                    run[q] = image[q]


@jit
def _walk_planes(image, cols, kh, kw, ph, pw, dh, dw, adjoint):
    """The stride-1 "same" pass that im2col (``adjoint`` False: cols = the taps of image) and
    col2im (True: image += cols) share; ``image`` C-contiguous (N, C, H, W).

    Works on a channel-major copy with a margin on both sides as wide as the largest shift, so
    a shifted read or write never leaves the buffer; what falls in the margin or on a
    neighbouring image is masked to 0 (col2im adds those zeros: at most a -0.0 becomes 0.0).
    """
    n_, c_, h, w = image.shape
    shifts, inside = _plane_taps(kh, kw, ph, pw, dh, dw, n_, h, w)
    taps = kh * kw
    margin = np.abs(shifts).max()
    planes = np.empty((c_, margin + n_ * h * w + margin), image.dtype)
    flat = image.reshape(n_, c_, h * w)
    if adjoint:
        planes[:] = 0
    else:
        _copy_planes(flat, planes[:, margin:], False)
    for k in range(cols.shape[0]):
        c, t = divmod(k, taps)
        row, keep = cols[k], inside[t]
        # a 0-based view: a computed start index would keep numba's negative-index check
        # inside the loop
        shifted = planes[c, margin + shifts[t]:]
        if adjoint:
            for q in range(row.shape[0]):
                shifted[q] += row[q] if keep[q] else 0
        else:
            for q in range(row.shape[0]):
                row[q] = shifted[q] if keep[q] else 0
    if adjoint:
        _copy_planes(flat, planes[:, margin:], True)


@jit
def _walk_rows(image, cols, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, adjoint):
    """The general pass (any stride, padding, dilation), output row by output row over the
    taps inside the image; ``image`` C-contiguous."""
    n_, c_, h, w = image.shape
    p = ho * wo
    for k in range(cols.shape[0]):
        c, i0, j0 = _tap(k, kh, kw, ph, pw, dh, dw)
        row = cols[k]
        if not adjoint:
            row[:] = 0
        lo, hi = _valid(wo, sw, j0, w)
        r_lo, r_hi = _valid(ho, sh, i0, h)
        for n in range(n_):
            for oh in range(r_lo, r_hi):
                run, img = row[n * p + oh * wo + lo:], image[n, c, oh * sh + i0, lo * sw + j0:]
                if adjoint:
                    for q in range(hi - lo):
                        img[q * sw] += run[q]
                else:
                    for q in range(hi - lo):
                        run[q] = img[q * sw]


@jit
def _walk(image, cols, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, adjoint):
    """im2col's (``adjoint`` False) or col2im's pass: the shifted planes where they apply."""
    n_, c_, h, w = image.shape
    if sh == 1 and sw == 1 and ho == h and wo == w:
        _walk_planes(image, cols, kh, kw, ph, pw, dh, dw, adjoint)
    else:
        _walk_rows(image, cols, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, adjoint)


@jit
def im2col(x, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, cols):
    """cols[(c*kh + i)*kw + j, (n*ho + oh)*wo + ow] = x[n, c, oh*sh - ph + i*dh, ow*sw - pw + j*dw]
    (0 outside x); x C-contiguous."""
    _walk(x, cols, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, False)


@jit
def col2im(dcols, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, dx):
    """The adjoint of :func:`im2col`: dx (C-contiguous, zeroed here) += every tap's column,
    taps outside x dropped."""
    dx[:] = 0
    _walk(dx, dcols, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, True)


@jit
def columns_to_nchw(ycols, bias, y):
    """y[n, o, :] = ycols[o, n*P:(n+1)*P] + bias[o]: the (C_out, N*P) product as (N, C_out, P)."""
    n_, o_, p = y.shape
    for n in range(n_):
        for o in range(o_):
            src = ycols[o, n * p:(n + 1) * p]
            dst = y[n, o]
            b = bias[o]
            for q in range(p):
                dst[q] = src[q] + b


@jit
def nchw_to_columns(dy, dcols, dbias):
    """dcols[o, n*P:(n+1)*P] = dy[n, o, :] (the inverse copy) and dbias[o] = sum of dy[:, o].

    The channel sums are accumulated in float64 per (n, o) run: NumPy's pairwise float32 sum
    and this one then agree to float32 rounding.
    """
    n_, o_, p = dy.shape
    for o in range(o_):
        total = 0.0
        for n in range(n_):
            src = dy[n, o]
            dst = dcols[o, n * p:(n + 1) * p]
            run = 0.0
            for q in range(p):
                v = src[q]
                dst[q] = v
                run += v
            total += run
        dbias[o] = total
