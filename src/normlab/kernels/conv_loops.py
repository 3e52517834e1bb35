"""The data movement around a convolution's matrix products, as compiled loops.

Layout: the patch matrix is channel-major, ``cols`` (C*kh*kw, N*Ho*Wo) with row
k = (c*kh + i)*kw + j and column (n*Ho + oh)*Wo + ow (Caffe's im2col, batched), so that every
loop here copies runs of consecutive output columns -- vectorised, unlike the pixel-major
(N*Ho*Wo, C*kh*kw) matrix of the readable path, whose rows are only C*kh*kw = 9..144 long and
whose fill is a scatter. The matrix products then are ``W @ cols`` (forward), ``dY @ cols^T``
(weight gradient) and ``W^T @ dY`` (input gradient), all with the long N*Ho*Wo dimension as the
BLAS "n" or "k"; the outputs (C_out, N*Ho*Wo) are turned into NCHW by one transposing copy.

Padding is never materialised: taps outside the input read as 0 (and are dropped in col2im).
For stride 1 with Wo == W (the "same" convolutions of the experiments' CNNs) a tap's column
block of one image is the image plane shifted by a constant: one long copy per (tap, image)
instead of one short copy per output row (faster for small planes), then one pass that zeroes
the few columns whose tap fell off an edge (:func:`_plane_tap`).
"""

from __future__ import annotations

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
def _plane_tap(ho, wo, h, w, i0, j0):
    """A stride-1 tap reading input pixel (oh + i0, ow + j0), with Wo == W: its flat offset
    ``shift`` from the output position, the output span [a0, b0) of rows inside the input, the
    part [a, b) of it whose shifted position is inside the plane, and the output columns
    [lo, hi) inside it (the columns outside wrap into the neighbouring row)."""
    r_lo, r_hi = _valid(ho, 1, i0, h)
    lo, hi = _valid(wo, 1, j0, w)
    shift = i0 * w + j0
    a0, b0 = r_lo * wo, r_hi * wo
    return shift, a0, b0, max(a0, -shift), min(b0, h * w - shift), lo, hi


@jit
def _zero_outside(row, n_, p, wo, a0, b0, lo, hi):
    """In every image's P-column run of ``row``: zero the output rows outside [a0, b0) and,
    inside it, the columns outside [lo, hi)."""
    for n in range(n_):
        base = n * p
        for q in range(a0):
            row[base + q] = 0
        for q in range(b0, p):
            row[base + q] = 0
        for r in range(a0 // wo, b0 // wo):
            for ow in range(lo):
                row[base + r * wo + ow] = 0
            for ow in range(hi, wo):
                row[base + r * wo + ow] = 0


@jit
def _tap(k, kh, kw, ph, pw, dh, dw):
    """Row k = (c*kh + i)*kw + j of the patch matrix: channel c and the offset (i0, j0) of its
    input pixel from (oh*sh, ow*sw)."""
    c, ij = divmod(k, kh * kw)
    i, j = divmod(ij, kw)
    return c, i * dh - ph, j * dw - pw


@jit
def _walk(image, cols, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, adjoint):
    """The pass over the patch matrix that im2col (``adjoint`` False: cols = the taps of
    image) and col2im (True: image += cols) share; ``image`` C-contiguous."""
    n_, c_, h, w = image.shape
    p, hw = ho * wo, h * w
    flat = image.reshape(-1)
    for k in range(cols.shape[0]):
        c, i0, j0 = _tap(k, kh, kw, ph, pw, dh, dw)
        row = cols[k]
        if sh == 1 and sw == 1 and wo == w:
            shift, a0, b0, a, b, lo, hi = _plane_tap(ho, wo, h, w, i0, j0)
            edges = lo > 0 or hi < wo
            if adjoint and edges:   # dropped taps in [a, b) would add to the neighbouring row
                _zero_outside(row, n_, p, wo, a0, b0, lo, hi)
            for n in range(n_):
                # 0-based views: a computed start index would keep numba's negative-index
                # check inside the loop
                run, img = row[n * p + a:n * p + b], flat[(n * c_ + c) * hw + a + shift:]
                if adjoint:
                    for q in range(b - a):
                        img[q] += run[q]
                else:
                    for q in range(b - a):
                        run[q] = img[q]
            if not adjoint and (edges or a0 > 0 or b0 < p):
                _zero_outside(row, n_, p, wo, a0, b0, lo, hi)
            continue
        # strided, or not "same": output row by row, over the taps inside the image
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
def im2col(x, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, cols):
    """cols[(c*kh + i)*kw + j, (n*ho + oh)*wo + ow] = x[n, c, oh*sh - ph + i*dh, ow*sw - pw + j*dw]
    (0 outside x); x C-contiguous."""
    _walk(x, cols, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, False)


@jit
def col2im(dcols, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, dx):
    """The adjoint of :func:`im2col`: dx (C-contiguous, zeroed here) += every tap's column,
    taps outside x dropped. ``dcols`` is scratch: the stride-1 path zeroes its dropped taps."""
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
