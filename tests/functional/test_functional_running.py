"""Running-statistic estimators against independent float64 references on concatenated data."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from normlab.functional import running


@settings(max_examples=40)
@given(n=st.integers(2, 200), cuts=st.lists(st.integers(1, 199), max_size=8),
       seed=st.integers(0, 2**16))
def test_exact_merge_equals_full_data_whatever_the_split(n, cuts, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)) * rng.uniform(1e-3, 1e3) + rng.uniform(-1e4, 1e4)
    count, mean, var = 0, np.zeros(3), np.zeros(3)
    for part in np.split(x, sorted({c for c in cuts if c < n})):
        if len(part):
            count, mean, var = running.chan_merge(count, mean, var, len(part), part.mean(0),
                                                  part.var(0))
    assert count == n
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-10, atol=1e-10 * np.abs(x).max())
    np.testing.assert_allclose(var, x.var(0), rtol=1e-10)
    np.testing.assert_allclose(running.bessel(var, count), x.var(0, ddof=1), rtol=1e-10)


@settings(max_examples=30)
@given(momentum=st.floats(0.01, 0.9), steps=st.integers(1, 30), seed=st.integers(0, 2**16))
def test_debiased_factor_equals_bias_corrected_ema(momentum, steps, seed):
    """Adam-style correction: raw EMA from zero divided by 1 - (1 - m)^t."""
    values = np.random.default_rng(seed).normal(size=steps) + 3
    raw, corrected = 0.0, 123.0  # the corrected estimate ignores its initial value
    for t, v in enumerate(values, start=1):
        raw = (1 - momentum) * raw + momentum * v
        f = running.debiased_factor(momentum, t)
        corrected = (1 - f) * corrected + f * v
    np.testing.assert_allclose(corrected, raw / (1 - (1 - momentum) ** steps), rtol=1e-10)


def test_debiased_first_batch_is_taken_exactly():
    assert running.debiased_factor(0.1, 1) == 1.0


@settings(max_examples=30)
@given(lengths=st.lists(st.integers(1, 9), min_size=1, max_size=5), layout=st.sampled_from([1, 2]),
       seed=st.integers(0, 2**16))
def test_masked_moments_equal_moments_of_unpadded_concatenation(lengths, layout, seed):
    rng = np.random.default_rng(seed)
    n, t, c = len(lengths), max(lengths), 3
    x = rng.normal(size=(n, t, c)) * 2 + 1
    mask = np.arange(t)[None, :] < np.array(lengths)[:, None]
    x[~mask] = 1e6  # padding garbage must not leak in
    real = np.concatenate([x[i, :length] for i, length in enumerate(lengths)])
    data = x if layout == 2 else x.transpose(0, 2, 1)
    mean, var, count = running.masked_moments(data, mask, channel_axis=layout)
    assert count == sum(lengths)
    np.testing.assert_allclose(mean, real.mean(0), rtol=1e-12)
    np.testing.assert_allclose(var, real.var(0), rtol=1e-10)


def test_nonfinite_statistics_are_detected():
    assert running.stats_are_finite(np.zeros(2), np.ones(2))
    assert not running.stats_are_finite(np.array([0.0, np.nan]), np.ones(2))
    assert not running.stats_are_finite(np.zeros(2), np.array([np.inf, 1.0]))
