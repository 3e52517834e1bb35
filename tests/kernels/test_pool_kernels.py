"""MaxPool2d and ReLU: the numba fast paths (normlab.kernels.pool, .activation) agree with the
readable NumPy paths -- exactly, since both only select values -- and with torch."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from normlab import nn

pytestmark = pytest.mark.usefixtures("numba")


def run(backend: str, layer, x: np.ndarray, dy: np.ndarray):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NORMLAB_KERNELS", backend)
        y = layer(x)
        return y.copy(), layer.backward(dy).copy()


def assert_paths_equal(layer, x, dy, overlapping: bool = False):
    """Equal y and dx; where windows overlap, an input's dx is a sum over its windows, which
    the two paths add in different orders (float rounding, 1e-7 relative in float32)."""
    fast, ref = run("numba", layer, x, dy), run("numpy", layer, x, dy)
    for name, a, b in zip(("y", "dx"), fast, ref, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        if overlapping and name == "dx":
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(a, b, err_msg=name)


@st.composite
def pool_case(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    h = draw(st.integers(max(1, kh - 2 * ph), 12))
    w = draw(st.integers(max(1, kw - 2 * pw), 12))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 3)), h, w)
    # small integers: many ties, which must go to the first maximum of each window
    ties = draw(st.booleans())
    return dict(kernel=(kh, kw), stride=(sh, sw), padding=(ph, pw), shape=shape, ties=ties)


def pool_input(case, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.integers(-2, 3, case["shape"]) if case["ties"]
         else rng.standard_normal(case["shape"])).astype(dtype)
    return x


@settings(max_examples=80)
@given(case=pool_case(), dtype=st.sampled_from([np.float32, np.float64]))
# the experiments' 2x2 / stride 2 loop: odd sizes leave a last row and column unread
@example(case=dict(kernel=(2, 2), stride=(2, 2), padding=(0, 0), shape=(3, 2, 7, 9),
                   ties=True), dtype=np.float32)
@example(case=dict(kernel=(2, 2), stride=(2, 2), padding=(0, 0), shape=(2, 3, 6, 4),
                   ties=False), dtype=np.float64)
def test_fast_maxpool_equals_readable_path(case, dtype):
    pool = nn.MaxPool2d(case["kernel"], case["stride"], case["padding"])
    x = pool_input(case, dtype)
    dy = np.random.default_rng(1).standard_normal(pool(x).shape).astype(dtype)
    overlapping = any(s < k for s, k in zip(case["stride"], case["kernel"], strict=True))
    assert_paths_equal(pool, x, dy, overlapping)


@pytest.mark.parametrize("kernel", [(2, 2, 0), (3, 2, 1)], ids=["2x2", "3x3-pad"])
def test_fast_maxpool_nan_is_the_window_max_and_takes_the_gradient(kernel):
    """A NaN wins its window (the first NaN, as np.argmax picks it); in the 2x2 loop a window
    whose sum is NaN sends the whole call to the general loop."""
    size, stride, pad = kernel
    pool = nn.MaxPool2d(size, stride, pad)
    x = np.random.default_rng(0).standard_normal((2, 2, 6, 6)).astype(np.float32)
    x[0, 1, 1, 1] = x[0, 1, 1, 0] = np.nan
    x[1, 0, 4, 5] = np.inf
    x[1, 0, 5, 5] = -np.inf
    dy = np.random.default_rng(1).standard_normal(pool(x).shape).astype(np.float32)
    assert_paths_equal(pool, x, dy, overlapping=stride < size)
    assert np.isnan(pool(x)[0, 1]).any()


def test_fast_maxpool_matches_torch_on_the_cnn_shape(torch):
    pool, ref = nn.MaxPool2d(2), torch.nn.MaxPool2d(2)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((60, 16, 14, 14)).astype(np.float32)
    y = pool(x)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = ref(xt)
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(pool.backward(dy), xt.grad.numpy())


@settings(max_examples=30)
@given(shape=st.lists(st.integers(1, 7), min_size=1, max_size=4),
       dtype=st.sampled_from([np.float32, np.float64]), transposed=st.booleans())
def test_fast_relu_equals_readable_path(shape, dtype, transposed):
    rng = np.random.default_rng(len(shape))
    x = rng.integers(-2, 3, shape).astype(dtype)   # exact zeros: no gradient there (torch)
    x.reshape(-1)[:1] = np.nan
    dy = rng.standard_normal(shape).astype(dtype)
    dy.reshape(-1)[-1:] = np.nan                   # a NaN gradient where y <= 0 is dropped
    if transposed:
        x, dy = x.T, dy.T
    assert_paths_equal(nn.ReLU(), x, dy)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_relu_keeps_the_readable_paths_bits(dtype):
    """Bit for bit what np.maximum(x, 0) gives: -0.0 becomes +0.0 (array_equal cannot see the
    sign of a zero), NaN and the infinities pass or clamp."""
    x = np.array([-0.0, 0.0, np.nan, -np.inf, np.inf, -1.5, 2.5, 1e-45], dtype)
    dy = np.ones_like(x)
    fast, ref = run("numba", nn.ReLU(), x, dy), run("numpy", nn.ReLU(), x, dy)
    assert fast[0].tobytes() == ref[0].tobytes()


@pytest.mark.parametrize("kernel", [2, 3], ids=["2x2", "3x3"])
def test_fast_maxpool_takes_channels_last_input(kernel):
    x = np.random.default_rng(5).standard_normal((2, 6, 7, 3)).astype(np.float32)
    x = x.transpose(0, 3, 1, 2)                 # (N, C, H, W) view of an NHWC array
    pool = nn.MaxPool2d(kernel)
    dy = np.random.default_rng(6).standard_normal(pool(x).shape).astype(np.float32)
    assert_paths_equal(pool, x, dy)
