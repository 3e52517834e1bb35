"""The LSTM's fast time loops (normlab.kernels.lstm) agree with the readable ones
(normlab.functional.lstm), alone and inside nn.LSTM with every norm, on odd shapes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from normlab.functional import lstm as readable
from normlab.nn.recurrent import LSTM, NORMS
from tests.nn.test_recurrent import H, I, N, T, gradcheck_module, make

pytestmark = pytest.mark.usefixtures("numba")

TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}


def fast_loops():
    from normlab.kernels import lstm
    return lstm


def toy_norm(scale: float):
    """A per-step 'norm' with a cache and a step-dependent output: z * scale * (1 + t/8) + t/8
    (mild, so that float32 rounding is not amplified by a gain of ~t per step over six steps:
    the test is of the loops' wiring, steps and caches)."""
    def forward(z, t):
        return z * (scale * (1 + t / 8)) + t / 8, (t, z.copy())

    def backward(dy, cache):
        t, _ = cache
        return dy * (scale * (1 + t / 8))

    return forward, backward


@settings(max_examples=40)
@given(n=st.integers(1, 5), steps=st.integers(1, 6), hidden=st.integers(1, 9),
       dtype=st.sampled_from([np.float32, np.float64]), norm_hh=st.booleans(),
       norm_c=st.booleans(), with_out=st.booleans(), seed=st.integers(0, 2**16))
def test_fast_loops_equal_readable_loops(n, steps, hidden, dtype, norm_hh, norm_c, with_out,
                                          seed):
    rng = np.random.default_rng(seed)
    a_x = rng.standard_normal((steps, n, 4 * hidden)).astype(dtype)
    w_hh = (rng.standard_normal((4 * hidden, hidden)) / np.sqrt(hidden)).astype(dtype)
    b, h0, c0 = (rng.standard_normal(s).astype(dtype) for s in (4 * hidden, (n, hidden),
                                                                  (n, hidden)))
    d_out = rng.standard_normal((steps, n, hidden)).astype(dtype) if with_out else None
    dh, dc = rng.standard_normal((2, n, hidden)).astype(dtype)
    fh, bh = toy_norm(0.7) if norm_hh else (None, None)
    fc, bc = toy_norm(1.3) if norm_c else (None, None)
    results = []
    for loops in (fast_loops(), readable):
        hs, c, cache = loops.lstm_forward_steps(a_x, w_hh, b, h0, c0, fh, fc)
        back = loops.lstm_backward_steps(d_out, dh.copy(), dc.copy(), w_hh, cache, bh, bc)
        results.append((hs, c, *back))
    for name, a, r in zip(("hs", "c_T", "dpre", "dw_hh", "dh_0", "dc_0"), *results,
                          strict=True):
        assert a.dtype == r.dtype and a.shape == r.shape, name
        np.testing.assert_allclose(a, r, err_msg=name, **TOL[dtype])


def run_lstm(monkeypatch, backend, norm, dtype, x, d_out, dh_n, hx):
    monkeypatch.setenv("NORMLAB_KERNELS", backend)
    m = LSTM(x.shape[2], d_out.shape[2], norm=norm, rng=1, dtype=dtype)
    out, (h_n, c_n) = m(x, hx)
    dx = m.backward(d_out, dh_n=dh_n)
    m.eval()
    return ([out, h_n, c_n, dx, *m.grad_hx, m(x, hx)[0]] + [p.grad for p in m.parameters()]
            + list(m.state_dict().values()))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("norm", NORMS)
def test_lstm_fast_path_matches_readable_path(monkeypatch, norm, dtype):
    """Odd sizes (N=5, T=7, I=3, H=11), a given initial state, gradients from every step."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 7, 3)).astype(dtype)
    d_out, dh_n = rng.standard_normal((5, 7, 11)).astype(dtype), rng.standard_normal((5, 11))
    hx = (rng.standard_normal((1, 5, 11)).astype(dtype), rng.standard_normal((5, 11)))
    fast = run_lstm(monkeypatch, "numba", norm, dtype, x, d_out, dh_n, hx)
    ref = run_lstm(monkeypatch, "numpy", norm, dtype, x, d_out, dh_n, hx)
    tol = TOL[dtype] if dtype == np.float64 else dict(rtol=2e-4, atol=2e-5)
    for i, (a, r) in enumerate(zip(fast, ref, strict=True)):
        assert a.dtype == r.dtype and a.shape == r.shape, i
        np.testing.assert_allclose(a, r, err_msg=str(i), **tol)


@pytest.mark.parametrize("norm", NORMS)
def test_lstm_fast_path_gradcheck_float64(monkeypatch, norm):
    """test_recurrent.py's BPTT gradcheck (with h_0, c_0 and gradients on h_n, c_n), run on
    the fast loops (that file checks the readable ones)."""
    monkeypatch.setenv("NORMLAB_KERNELS", "numba")
    rng = np.random.default_rng(1)
    hx = (rng.standard_normal((1, N, H)), rng.standard_normal((1, N, H)))
    gradcheck_module(make(norm), rng.standard_normal((N, T, I)), hx)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_backward_params_equals_backward_without_dx(monkeypatch, backend):
    monkeypatch.setenv("NORMLAB_KERNELS", backend)
    rng = np.random.default_rng(7)
    x, d_out = rng.standard_normal((3, 4, 2)), rng.standard_normal((3, 4, 5))
    grads = []
    for method in ("backward", "backward_params"):
        m = LSTM(2, 5, norm="layer", rng=0, dtype=np.float64)
        m(x)
        result = getattr(m, method)(d_out)
        assert (result is None) == (method == "backward_params")
        grads.append([p.grad for p in m.parameters()] + list(m.grad_hx))
    for a, b in zip(*grads, strict=True):
        np.testing.assert_array_equal(a, b)


def test_lstm_after_a_fast_forward_deep_copies(monkeypatch):
    import copy

    monkeypatch.setenv("NORMLAB_KERNELS", "numba")
    m = LSTM(2, 3, norm="recurrent_batch", rng=0)
    x = np.random.default_rng(0).standard_normal((4, 3, 2)).astype(np.float32)
    out, _ = m(x)
    twin = copy.deepcopy(m)
    np.testing.assert_array_equal(twin.backward(np.ones_like(out)), m.backward(np.ones_like(out)))
