"""kernels.fast_tanh.tanh_value: float32's rational tanh against float64 tanh, its edge cases,
and float64 left exact."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("numba")

# The bound the module's docstring states, fixed from a first measurement on another grid (5.4
# units in the last place; this grid gives 4.5; NumPy's own float32 tanh: 1.4).
MAX_ULP = 6.0


def apply(x: np.ndarray) -> np.ndarray:
    from normlab.kernels.fast_tanh import tanh_value, vector_jit

    @vector_jit
    def loop(x, out):
        for k in range(x.size):
            out[k] = tanh_value(x[k])

    out = np.empty_like(x)
    loop(x, out)
    return out


def ulp_error(x32: np.ndarray) -> np.ndarray:
    """|tanh_value(x) - tanh(x)| in units of the last place of float32 at tanh(x)."""
    exact = np.tanh(x32.astype(np.float64))
    ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    return np.abs(apply(x32).astype(np.float64) - exact) / ulp


def test_float32_within_a_few_ulp_on_a_dense_grid():
    grid = np.linspace(-12, 12, 4_000_001, dtype=np.float32)
    tiny = np.geomspace(1e-30, 1e-2, 200_001, dtype=np.float32)
    x = np.concatenate([grid, tiny, -tiny])
    err = ulp_error(x)
    assert err.max() <= MAX_ULP, (float(err.max()), float(x[err.argmax()]))
    assert err.mean() < 1.5


def test_a_coarser_approximation_fails_the_same_bound():
    """The bound can fail: tanh through float16 (11 significant bits) is far outside it."""
    x = np.linspace(-4, 4, 10_001, dtype=np.float32)
    exact = np.tanh(x.astype(np.float64))
    ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    coarse = np.tanh(x).astype(np.float16).astype(np.float64)
    assert (np.abs(coarse - exact) / ulp).max() > MAX_ULP


def test_float32_edge_cases():
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 8.0, 9.0, 100.0, -100.0, 3e38],
                 dtype=np.float32)
    y = apply(x)
    # saturated: within the 4 units in the last place (2.4e-7) that the clamp leaves below 1
    np.testing.assert_allclose(y[[2, 3, 6, 7, 8, 9]], [1, -1, 1, 1, -1, 1], rtol=0, atol=2.4e-7)
    assert y[0] == 0 and y[1] == 0 and np.signbit(y[1]) and not np.signbit(y[0])
    assert np.isnan(y[4]), "a NaN must come out NaN (a diverging LSTM must not saturate)"
    assert 0.99999 < y[5] <= 1.0


def test_float32_is_odd():
    x = np.random.default_rng(0).standard_normal(100_000).astype(np.float32) * 4
    np.testing.assert_array_equal(apply(-x), -apply(x))


def test_float64_is_libm_tanh():
    x = np.random.default_rng(1).standard_normal(2_000) * 5
    np.testing.assert_array_equal(apply(x), [math.tanh(v) for v in x])
