"""Conv2d: the numba fast path (normlab.kernels.conv) agrees with the readable NumPy path and
with torch, on odd shapes that cross every special case (stride-1 "same" planes, edges,
dilation, groups, eval blocks)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from normlab import nn
from normlab.kernels import conv as conv_kernels
from tests.gradcheck import assert_grad_close, numerical_grad

pytestmark = pytest.mark.usefixtures("numba")

# float32 sums of up to C*kh*kw products, BLAS blocking vs NumPy's matmul: rounding only
TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


def run(backend: str, conv: nn.Conv2d, x: np.ndarray, dy: np.ndarray, training: bool = True):
    """(y, dx, dweight, dbias) of one forward + backward with NORMLAB_KERNELS=backend."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NORMLAB_KERNELS", backend)
        conv.train(training)
        conv.zero_grad()
        y = conv(x)
        dx = conv.backward(dy)
    return (y.copy(), dx.copy(), conv.weight.grad.copy(),
            None if conv.bias is None else conv.bias.grad.copy())


def assert_paths_agree(conv, x, training=True):
    dy = np.random.default_rng(1).standard_normal(conv(x).shape).astype(x.dtype)
    fast = run("numba", conv, x, dy, training)
    ref = run("numpy", conv, x, dy, training)
    for name, a, b in zip(("y", "dx", "dweight", "dbias"), fast, ref, strict=True):
        if b is None:
            assert a is None
            continue
        assert a.dtype == b.dtype and a.shape == b.shape, name
        np.testing.assert_allclose(a, b, err_msg=name, **TOL[x.dtype.type])
    assert fast[0].flags.c_contiguous


@st.composite
def conv_case(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    c_in = groups * draw(st.integers(1, 3))
    c_out = groups * draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - 2 * ph), 11))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - 2 * pw), 11))
    n = draw(st.integers(1, 4))
    bias = draw(st.booleans())
    return dict(shape=(n, c_in, h, w), args=(c_in, c_out, (kh, kw)),
                kw=dict(stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw), groups=groups,
                        bias=bias))


@settings(max_examples=60)
@given(case=conv_case(), dtype=st.sampled_from([np.float32, np.float64]),
       training=st.booleans())
# stride-1 "same" convolutions: the shifted-plane path, with and without dilation
@example(case=dict(shape=(3, 2, 7, 5), args=(2, 3, (3, 3)),
                   kw=dict(stride=1, padding=1, dilation=1, groups=1, bias=True)),
         dtype=np.float32, training=True)
@example(case=dict(shape=(2, 3, 6, 9), args=(3, 2, (5, 3)),
                   kw=dict(stride=1, padding=(4, 2), dilation=(2, 2), groups=1, bias=False)),
         dtype=np.float64, training=True)
@example(case=dict(shape=(2, 1, 1, 4), args=(1, 2, (3, 3)),
                   kw=dict(stride=1, padding=1, dilation=1, groups=1, bias=True)),
         dtype=np.float32, training=False)
def test_fast_conv_matches_readable_path(case, dtype, training):
    conv = nn.Conv2d(*case["args"], rng=0, dtype=dtype, **case["kw"])
    x = np.random.default_rng(0).standard_normal(case["shape"]).astype(dtype)
    assert_paths_agree(conv, x, training)


@pytest.mark.parametrize("stride", [1, 2], ids=["same-planes", "strided-rows"])
def test_fast_conv_takes_a_read_only_input(stride):
    """A read-only array (a memory-mapped file, a broadcast view) is read, never written: it
    used to fail numba's typing of the walk that im2col and col2im share."""
    conv = nn.Conv2d(3, 4, 3, stride=stride, padding=1, rng=0)
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)
    x.flags.writeable = False
    assert_paths_agree(conv, x)


@pytest.mark.parametrize("layout", ["channels_last", "reversed"])
def test_fast_conv_takes_non_contiguous_input(layout):
    conv = nn.Conv2d(3, 4, 3, padding=1, rng=0)
    x = np.random.default_rng(0).standard_normal((2, 5, 6, 3)).astype(np.float32)
    x = x.transpose(0, 3, 1, 2) if layout == "channels_last" else x.transpose(0, 3, 1, 2)[::-1]
    assert_paths_agree(conv, x)


def test_eval_forward_in_blocks_matches_and_backward_remakes_patches(monkeypatch):
    """Eval works a block of images at a time (here 2 per block: 3 x one image's patch bytes,
    less one; the last block is 1 image); a backward after it makes the patches it did not
    keep."""
    monkeypatch.setattr(conv_kernels, "BLOCK_BYTES", 3 * (4 * 9 * 7 * 6 * 4) - 1)
    conv = nn.Conv2d(4, 5, 3, padding=1, rng=0)
    x = np.random.default_rng(0).standard_normal((7, 4, 7, 6)).astype(np.float32)
    assert_paths_agree(conv, x, training=False)
    monkeypatch.setenv("NORMLAB_KERNELS", "numba")
    np.testing.assert_allclose(conv.eval()(x), conv.train()(x), rtol=1e-6, atol=1e-6)


def test_fast_conv_backward_params_skips_dx_and_matches(monkeypatch):
    conv = nn.Conv2d(2, 3, 3, padding=1, rng=0)
    x = np.random.default_rng(0).standard_normal((4, 2, 5, 5)).astype(np.float32)
    dy = np.random.default_rng(1).standard_normal((4, 3, 5, 5)).astype(np.float32)
    _, _, dweight, dbias = run("numba", conv, x, dy)
    monkeypatch.setenv("NORMLAB_KERNELS", "numba")
    conv.zero_grad()
    conv(x)
    conv.backward_params(dy)
    np.testing.assert_array_equal(conv.weight.grad, dweight)
    np.testing.assert_array_equal(conv.bias.grad, dbias)


@pytest.mark.parametrize("kw", [dict(padding=1), dict(stride=2, padding=2, dilation=2),
                                dict(padding=(0, 2), groups=2)], ids=str)
def test_fast_conv_gradcheck_float64(monkeypatch, kw):
    monkeypatch.setenv("NORMLAB_KERNELS", "numba")
    conv = nn.Conv2d(2, 4, 3, rng=0, dtype=np.float64, **kw)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 2, 6, 5))
    dy = rng.standard_normal(conv(x).shape)

    def f() -> float:
        return float(np.sum(conv(x) * dy))

    conv.zero_grad()
    conv(x)
    dx = conv.backward(dy)
    assert_grad_close(dx, numerical_grad(f, x), rtol=1e-6, atol=1e-8)
    for p in conv.parameters():
        assert_grad_close(p.grad, numerical_grad(f, p.data), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("shape", "c_out", "kw"), [
    ((60, 1, 14, 14), 16, dict(padding=1)),     # the experiments' CNN, first layer
    ((33, 16, 7, 7), 32, dict(padding=1)),      # second layer, an odd batch
    ((3, 4, 9, 10), 6, dict(stride=(2, 3), padding=(1, 2), dilation=(1, 2), groups=2)),
], ids=["cnn-1", "cnn-2", "odd"])
def test_fast_conv_matches_torch(monkeypatch, torch, dtype, shape, c_out, kw):
    monkeypatch.setenv("NORMLAB_KERNELS", "numba")
    conv = nn.Conv2d(shape[1], c_out, 3, rng=0, dtype=dtype, **kw)
    ref = torch.nn.Conv2d(shape[1], c_out, 3, **kw).to(torch.float64 if dtype == np.float64
                                                       else torch.float32)
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in conv.state_dict().items()})
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(dtype)
    y = conv(x)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = conv.backward(dy)
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = ref(xt)
    yt.backward(torch.from_numpy(dy))
    rel = 1e-5 if dtype == np.float32 else 1e-12

    def close(ours, theirs):
        # A weight-gradient entry sums N*H*W products (11,760 in cnn-1) in an order torch
        # picks per run (its threads), so in float32 it is off by ~eps*sqrt(terms) of the
        # array's scale, not of its own size: an entry that cancels to -0.146 among entries
        # of 150 moved by 2e-4. The bound is relative to the array's largest entry.
        theirs = theirs.numpy()
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=rel * max(1.0, np.abs(theirs).max()))

    close(y, yt.detach())
    close(dx, xt.grad)
    close(conv.weight.grad, ref.weight.grad)
    close(conv.bias.grad, ref.bias.grad)


@pytest.mark.parametrize("make", [lambda: nn.Conv2d(2, 3, 3, padding=1, rng=0),
                                  lambda: nn.MaxPool2d(2)], ids=["conv", "maxpool"])
def test_layer_after_a_fast_forward_deep_copies_and_pickles(monkeypatch, make):
    """The cache records which path ran as a flag: a kernel module in it cannot be copied
    (fold's magnitude check deep-copies models that have run)."""
    import copy
    import pickle

    monkeypatch.setenv("NORMLAB_KERNELS", "numba")
    layer = make()
    x = np.random.default_rng(0).standard_normal((2, 2, 6, 6)).astype(np.float32)
    y = layer(x)
    dy = np.ones_like(y)
    twin, thawed = copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))
    expected = layer.backward(dy)
    np.testing.assert_array_equal(twin.backward(dy), expected)
    np.testing.assert_array_equal(thawed.backward(dy), expected)


@settings(max_examples=40)
@given(n=st.integers(1, 4), c=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9),
       kh=st.integers(1, 4), kw=st.integers(1, 4), dh=st.integers(1, 2), dw=st.integers(1, 2))
def test_same_plane_path_is_the_row_path_bit_for_bit(n, c, h, w, kh, kw, dh, dw):
    """A stride-1 convolution whose padding keeps (H, W) goes through the masked shifted-plane
    pass; it must move exactly the values of the general row-by-row pass, both ways."""
    from normlab.kernels import conv_loops as loops

    # the padding that keeps the size exists only for an odd dilated extent; else pad less
    # on one side is not expressible, so take the nearest and let Ho/Wo differ (row path)
    ph, pw = dh * (kh - 1) // 2, dw * (kw - 1) // 2
    ho, wo = h + 2 * ph - dh * (kh - 1), w + 2 * pw - dw * (kw - 1)
    if ho < 1 or wo < 1:
        return
    geometry = (kh, kw, 1, 1, ph, pw, dh, dw, ho, wo)
    rng = np.random.default_rng(n * 1000 + c * 100 + h * 10 + w)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    x[0, 0, 0, 0] = np.inf   # a non-finite value must not leak into a masked-out position
    cols, expected = (np.full((c * kh * kw, n * ho * wo), np.nan, np.float32) for _ in range(2))
    loops.im2col(x, *geometry, cols)
    loops._walk_rows(x, expected, *geometry[:-2], ho, wo, False)
    np.testing.assert_array_equal(cols, expected)
    dcols = rng.standard_normal(cols.shape).astype(np.float32)
    dx, dx_rows = np.empty_like(x), np.zeros_like(x)
    loops.col2im(dcols, *geometry, dx)
    loops._walk_rows(dx_rows, dcols, *geometry[:-2], ho, wo, True)
    np.testing.assert_array_equal(dx, dx_rows)
