"""NumPy-engine BatchNorm running-statistics options vs independent float64 references.

References are NumPy one-liners on the concatenation of every batch (or of the unpadded
positions), never the code under test; gradients by float64 central differences.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import normlab.nn as nn
from normlab import functional as F
from tests.gradcheck import assert_grad_close, numerical_grad
from tests.oracles import masked_batch_norm


def _batches(rng, sizes, c=3, tail=()):
    return [rng.normal(size=(n, c, *tail)) * rng.uniform(0.5, 5) + rng.uniform(-3, 3)
            for n in sizes]


def _per_channel(x):
    return np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])


def _feed(m, batches):
    m.train()
    for b in batches:
        m(b)


def _bn(c=3, dim=1, **kw):
    return getattr(nn, f"BatchNorm{dim}d")(c, dtype=np.float64, **kw)


def _sharing(probe, other):
    """``probe`` using ``other``'s affine Parameters by reference (finite differences perturb
    them in place)."""
    if other.affine:
        probe.weight, probe.bias = other.weight, other.bias
    return probe


# -- defaults: bit-identical to the module before the options ------------------------------------
@pytest.mark.parametrize("shape,momentum", [((6, 3), 0.1), ((4, 3, 5), None),
                                            ((4, 3, 2, 3), 0.3), ((2, 3, 2, 2, 2), 0.1)])
def test_default_options_are_bit_identical_to_the_plain_functional_composition(shape, momentum):
    """The pre-options module was exactly: batch_norm_train, then update_running_stats with
    averaging_factor(momentum, t); eval = batch_norm_eval. Recomposed here independently."""
    dim = {2: 1, 3: 1, 4: 2, 5: 3}[len(shape)]
    m = getattr(nn, f"BatchNorm{dim}d")(3, momentum=momentum)
    rng = np.random.default_rng(0)
    w, b = rng.uniform(0.5, 2, 3).astype(np.float32), rng.normal(size=3).astype(np.float32)
    m.weight.data[...], m.bias.data[...] = w, b
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    for t in range(1, 4):
        x = (rng.normal(size=shape) * t + t).astype(np.float32)
        dy = rng.normal(size=shape).astype(np.float32)
        y_ref, cache = F.batch_norm_train(x, w, b, 1e-5)
        rm, rv = F.update_running_stats(rm, rv, cache, F.averaging_factor(momentum, t))
        dx_ref, dw_ref, db_ref = F.batch_norm_backward(dy, cache)
        m.zero_grad()
        assert np.array_equal(m(x), y_ref)
        assert np.array_equal(m.backward(dy), dx_ref)
        assert np.array_equal(m.weight.grad, dw_ref) and np.array_equal(m.bias.grad, db_ref)
        assert np.array_equal(m.running_mean, rm) and np.array_equal(m.running_var, rv)
    m.eval()
    x = rng.normal(size=shape).astype(np.float32)
    assert np.array_equal(m(x), F.batch_norm_eval(x, rm, rv, w, b, 1e-5))
    assert list(m.state_dict()) == ["weight", "bias", "running_mean", "running_var",
                                    "num_batches_tracked"]


def test_default_state_dict_loads_into_torch_strict(torch):
    m = nn.BatchNorm2d(3)
    _feed(m, [np.random.default_rng(1).normal(size=(4, 3, 2, 2)).astype(np.float32)])
    ref = torch.nn.BatchNorm2d(3)
    ref.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in m.state_dict().items()},
                        strict=True)
    keys = {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}
    assert set(_bn(running_stats="exact").state_dict()) == keys | {"num_samples_tracked"}
    assert set(_bn(skip_nonfinite=True).state_dict()) == keys | {"num_batches_skipped"}
    for opts in ({"running_stats": "cumulative"}, {"running_stats": "ema_debiased"},
                 {"unbiased": "both"}, {"unbiased": "none"}, {"virtual_batch_size": 2}):
        assert set(_bn(**opts).state_dict()) == keys


def test_same_options_match_normlab_torch(torch):
    """The two engines agree on every option (running statistics after several steps)."""
    import normlab.torch as nt

    batches = _batches(np.random.default_rng(2), [5, 3, 8], tail=(2,))
    for opts in ({"running_stats": "exact", "unbiased": "none"},
                 {"running_stats": "ema_debiased", "unbiased": "both"},
                 {"running_stats": "cumulative"}):
        ours, ref = _bn(**opts), nt.BatchNorm1d(3, **opts).double()
        for x in batches:
            y = ours(x)
            np.testing.assert_allclose(y, ref(torch.from_numpy(x)).detach().numpy(),
                                       rtol=1e-10, atol=1e-10)
        for k, v in ref.state_dict().items():
            np.testing.assert_allclose(ours.state_dict()[k], v.numpy(), rtol=1e-12, err_msg=k)


# -- exact / cumulative / debiased ------------------------------------------------------------
@settings(max_examples=25)
@given(sizes=st.lists(st.integers(2, 12), min_size=1, max_size=6), seed=st.integers(0, 2**16),
       unbiased=st.sampled_from(["running", "both", "none"]), length=st.sampled_from([0, 3]))
def test_exact_equals_full_data_moments_whatever_the_split(sizes, seed, unbiased, length):
    tail = (length,) if length else ()
    batches = _batches(np.random.default_rng(seed), sizes, tail=tail)
    m = _bn(running_stats="exact", unbiased=unbiased)
    _feed(m, batches)
    data = _per_channel(np.concatenate(batches))
    assert int(m.num_samples_tracked) == len(data)
    np.testing.assert_allclose(m.running_mean, data.mean(0), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(m.running_var, data.var(0, ddof=0 if unbiased == "none" else 1),
                               rtol=1e-10)


@settings(max_examples=15)
@given(sizes=st.lists(st.integers(2, 12), min_size=1, max_size=4), seed=st.integers(0, 2**16),
       virtual=st.integers(1, 5))
def test_exact_with_ghost_batches_still_equals_full_data(sizes, seed, virtual):
    batches = _batches(np.random.default_rng(seed), sizes)
    m = _bn(running_stats="exact", virtual_batch_size=max(virtual, 2))
    _feed(m, batches)
    data = np.concatenate(batches)
    np.testing.assert_allclose(m.running_mean, data.mean(0), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(m.running_var, data.var(0, ddof=1), rtol=1e-10)


def test_exact_in_float32_buffers_is_merged_in_float64():
    batches = [b.astype(np.float32) for b in _batches(np.random.default_rng(3), [7] * 40)]
    m = nn.BatchNorm1d(3, running_stats="exact")
    _feed(m, batches)
    data = np.concatenate(batches).astype(np.float64)
    np.testing.assert_allclose(m.running_mean, data.mean(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(m.running_var, data.var(0, ddof=1), rtol=1e-5)
    m.reset_running_stats()
    assert int(m.num_samples_tracked) == 0


@pytest.mark.parametrize("momentum", [0.1, None])
def test_cumulative_is_the_mean_of_batch_statistics(momentum):
    batches = _batches(np.random.default_rng(4), [4, 9, 5, 3])
    m = _bn(momentum=momentum, running_stats="cumulative")
    _feed(m, batches)
    np.testing.assert_allclose(m.running_mean, np.mean([b.mean(0) for b in batches], 0),
                               rtol=1e-12)
    np.testing.assert_allclose(m.running_var, np.mean([b.var(0, ddof=1) for b in batches], 0),
                               rtol=1e-12)


@settings(max_examples=20)
@given(momentum=st.floats(0.01, 0.9), steps=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_ema_debiased_is_raw_ema_over_one_minus_decay_power(momentum, steps, seed):
    batches = _batches(np.random.default_rng(seed), [5] * steps)
    m = _bn(momentum=momentum, running_stats="ema_debiased")
    _feed(m, batches)
    raw_mean, raw_var = np.zeros(3), np.zeros(3)
    for b in batches:
        raw_mean = (1 - momentum) * raw_mean + momentum * b.mean(0)
        raw_var = (1 - momentum) * raw_var + momentum * b.var(0, ddof=1)
    bias = 1 - (1 - momentum) ** steps
    np.testing.assert_allclose(m.running_mean, raw_mean / bias, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(m.running_var, raw_var / bias, rtol=1e-9)


# -- unbiased --------------------------------------------------------------------------------
@pytest.mark.parametrize("unbiased", ["running", "both", "none"])
@pytest.mark.parametrize("affine", [True, False])
def test_unbiased_choice_forward_running_var_and_gradcheck(unbiased, affine):
    rng = np.random.default_rng(5)
    x, dy = rng.normal(size=(5, 3, 2)) * 2 + 1, rng.normal(size=(5, 3, 2))
    m = _bn(momentum=1.0, unbiased=unbiased, affine=affine)
    w = np.array([0.5, 1.0, -2.0]) if affine else np.ones(3)
    if affine:
        m.weight.data[...], m.bias.data[...] = w, [0.1, -0.2, 0.3]
    y = m(x)
    dx = m.backward(dy)
    data = _per_channel(x)
    n = len(data)
    s = n / (n - 1) if unbiased == "both" else 1.0
    inv_std = (1 / np.sqrt(s * data.var(0) + 1e-5)).reshape(1, 3, 1)
    x_hat = (x - data.mean(0).reshape(1, 3, 1)) * inv_std
    b = m.bias.data.reshape(1, 3, 1) if affine else 0
    np.testing.assert_allclose(y, x_hat * w.reshape(1, 3, 1) + b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m.running_var, data.var(0, ddof=0 if unbiased == "none" else 1),
                               rtol=1e-12)
    # the closed form: dx = inv_std (dx_hat - mean dx_hat - s x_hat mean(dx_hat x_hat))
    dx_hat = dy * w.reshape(1, 3, 1)
    mean = lambda a: a.mean(axis=(0, 2), keepdims=True)  # noqa: E731
    np.testing.assert_allclose(dx, inv_std * (dx_hat - mean(dx_hat)
                                              - s * x_hat * mean(dx_hat * x_hat)),
                               rtol=1e-9, atol=1e-12)

    def loss():
        probe = _sharing(_bn(unbiased=unbiased, affine=affine, track_running_stats=False), m)
        return float((probe(x) * dy).sum())

    assert_grad_close(dx, numerical_grad(loss, x), rtol=1e-5, atol=1e-7)
    if affine:
        wgrad = m.weight.grad.copy()
        assert_grad_close(wgrad, numerical_grad(loss, m.weight.data), rtol=1e-5, atol=1e-7)


# -- masks -----------------------------------------------------------------------------------
@settings(max_examples=20)
@given(lengths=st.lists(st.integers(1, 6), min_size=2, max_size=5), seed=st.integers(0, 2**16),
       unbiased=st.sampled_from(["running", "both"]))
def test_mask_equals_bn_on_the_unpadded_concatenation(lengths, seed, unbiased):
    rng = np.random.default_rng(seed)
    n, t, c = len(lengths), max(lengths), 3
    x = rng.normal(size=(n, c, t)) * 2 + 1
    mask = np.arange(t)[None, :] < np.array(lengths)[:, None]
    x.transpose(0, 2, 1)[~mask] = 1e6
    dy = rng.normal(size=(n, c, t))
    w, b = rng.uniform(0.5, 1.5, c), rng.normal(size=c)
    m = _bn(c, momentum=0.3, unbiased=unbiased)
    m.weight.data[...], m.bias.data[...] = w, b
    y = m(x, mask)
    dx = m.backward(dy)

    ref = masked_batch_norm(x, dy, lengths, w, unbiased)
    real, dy_real, x_hat, dx_real = ref["real"], ref["dy"], ref["x_hat"], ref["dx"]
    np.testing.assert_array_equal(y.transpose(0, 2, 1)[~mask], 0)
    np.testing.assert_array_equal(dx.transpose(0, 2, 1)[~mask], 0)
    np.testing.assert_allclose(y.transpose(0, 2, 1)[mask], x_hat * w + b, rtol=1e-10,
                               atol=1e-10)
    np.testing.assert_allclose(dx.transpose(0, 2, 1)[mask], dx_real, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(m.weight.grad, (dy_real * x_hat).sum(0), rtol=1e-10)
    np.testing.assert_allclose(m.bias.grad, dy_real.sum(0), rtol=1e-10)
    np.testing.assert_allclose(m.running_mean, 0.3 * real.mean(0), rtol=1e-10)
    np.testing.assert_allclose(m.running_var, 0.7 + 0.3 * real.var(0, ddof=1), rtol=1e-10)


@pytest.mark.parametrize("unbiased", ["running", "both"])
@pytest.mark.parametrize("training", [True, False])
def test_mask_gradcheck(unbiased, training):
    rng = np.random.default_rng(6)
    x, dy = rng.normal(size=(3, 2, 4)), rng.normal(size=(3, 2, 4))
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=bool)
    m = _bn(2, unbiased=unbiased)
    m.weight.data[...], m.bias.data[...] = [0.7, 1.3], [0.1, -0.1]
    m.running_mean[...], m.running_var[...] = [0.2, -0.3], [1.5, 0.5]
    m.train(training)
    m(x, mask)
    dx = m.backward(dy)
    probe = _sharing(_bn(2, unbiased=unbiased, momentum=0.0), m).train(training)
    probe.running_mean[...], probe.running_var[...] = m.running_mean, m.running_var
    loss = lambda: float((probe(x, mask) * dy).sum())  # noqa: E731
    assert_grad_close(dx, numerical_grad(loss, x), rtol=1e-5, atol=1e-7)
    assert_grad_close(m.weight.grad, numerical_grad(loss, m.weight.data), rtol=1e-5, atol=1e-7)


# -- non-finite batches ----------------------------------------------------------------------
@pytest.mark.parametrize("running_stats", ["ema", "exact", "cumulative"])
def test_skip_nonfinite_leaves_running_stats_and_warns_once(running_stats):
    rng = np.random.default_rng(7)
    m = nn.BatchNorm2d(3, running_stats=running_stats, skip_nonfinite=True)
    m(rng.normal(size=(4, 3, 2, 2)).astype(np.float32))
    before = m.state_dict()
    bad_nan = rng.normal(size=(4, 3, 2, 2)).astype(np.float32)
    bad_nan[1, 2, 0, 1] = np.nan
    with np.errstate(over="ignore"):
        bad_inf = (rng.normal(size=(4, 3, 2, 2)) * 1e5).astype(np.float16)  # fp16 overflow
    assert np.isinf(bad_inf).any()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m(bad_nan)
        m(bad_inf)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)
                and "not finite" in str(w.message)]
    assert len(messages) == 1 and "BatchNorm2d(3)" in messages[0]
    after = m.state_dict()
    assert int(after["num_batches_skipped"]) == 2
    for k, v in before.items():
        if k != "num_batches_skipped":
            assert np.array_equal(after[k], v), k
    m(rng.normal(size=(4, 3, 2, 2)).astype(np.float32))
    assert int(m.num_batches_tracked) == 2 and np.isfinite(m.running_var).all()


def test_without_skip_a_nan_batch_poisons_the_running_stats_like_torch():
    x = np.random.default_rng(8).normal(size=(4, 3))
    x[0, 0] = np.nan
    m = _bn()
    m(x)
    assert np.isnan(m.running_mean[0]) and np.isfinite(m.running_mean[1:]).all()


# -- freeze ----------------------------------------------------------------------------------
def test_freeze_stays_frozen_after_train_until_unfreeze():
    rng = np.random.default_rng(9)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 3),
                          nn.BatchNorm1d(3, running_stats="exact"))
    model(rng.normal(size=(8, 4)).astype(np.float32))
    sd = model.state_dict()
    nn.freeze(model)
    model.train()
    x = rng.normal(size=(8, 4)).astype(np.float32)
    y = model(x)
    model.backward(np.ones_like(y))
    for k, v in model.state_dict().items():
        assert np.array_equal(v, sd[k]), k
    model.eval()
    assert np.array_equal(model(x), y)
    nn.unfreeze(model)
    model.train()
    model(x)
    assert int(model[1].num_batches_tracked) == 2
    assert not np.array_equal(model[1].running_mean, sd["1.running_mean"])


def test_freeze_needs_running_stats():
    model = nn.Sequential(nn.BatchNorm1d(3), nn.BatchNorm1d(3, track_running_stats=False))
    with pytest.raises(ValueError, match="track_running_stats"):
        nn.freeze(model)
    assert not model[0].frozen


# -- ghost -----------------------------------------------------------------------------------
@pytest.mark.parametrize("n,parts", [(11, [4, 4, 3]), (13, [4, 4, 5]), (8, [4, 4])])
def test_virtual_batch_size_is_train_only_and_takes_remainders(n, parts):
    rng = np.random.default_rng(10)
    x = rng.normal(size=(n, 2)) * np.arange(1, n + 1)[:, None]
    m = _bn(2, affine=False, momentum=1.0, virtual_batch_size=4)
    y = m(x)
    chunks = np.split(x, np.cumsum(parts)[:-1])
    want = np.concatenate([(c - c.mean(0)) / np.sqrt(c.var(0) + 1e-5) for c in chunks])
    np.testing.assert_allclose(y, want, rtol=1e-10)
    w = np.array(parts)[:, None] / n   # count-weighted means of the virtual batch statistics
    np.testing.assert_allclose(m.running_mean, (w * [c.mean(0) for c in chunks]).sum(0),
                               rtol=1e-12)
    np.testing.assert_allclose(m.running_var, (w * [c.var(0, ddof=1) for c in chunks]).sum(0),
                               rtol=1e-12)
    m.eval()
    np.testing.assert_allclose(m(x), (x - m.running_mean) / np.sqrt(m.running_var + 1e-5),
                               rtol=1e-10)
    free = _bn(2, affine=False, track_running_stats=False, virtual_batch_size=4).eval()
    np.testing.assert_allclose(free(x), (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5), rtol=1e-10)


def test_virtual_batch_size_gradcheck():
    rng = np.random.default_rng(11)
    x, dy = rng.normal(size=(7, 2)), rng.normal(size=(7, 2))
    m = _bn(2, virtual_batch_size=3)
    m.weight.data[...] = [0.5, 2.0]
    m(x)
    dx = m.backward(dy)
    probe = _sharing(_bn(2, virtual_batch_size=3), m)
    loss = lambda: float((probe(x) * dy).sum())  # noqa: E731
    assert_grad_close(dx, numerical_grad(loss, x), rtol=1e-5, atol=1e-7)


# -- bad options -----------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,exc,name", [
    ({"running_stats": "exponential"}, ValueError, "running_stats"),
    ({"running_stats": 1}, ValueError, "running_stats"),
    ({"unbiased": "bessel"}, ValueError, "unbiased"),
    ({"skip_nonfinite": 1}, TypeError, "skip_nonfinite"),
    ({"running_stats": "ema_debiased", "momentum": None}, ValueError, "momentum"),
    ({"virtual_batch_size": 0}, ValueError, "virtual_batch_size"),
    ({"virtual_batch_size": 4, "unbiased": "both"}, ValueError, "unbiased"),
])
def test_bad_options_raise_naming_the_argument(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        nn.BatchNorm1d(3, **kwargs)


@pytest.mark.parametrize("mask,exc", [
    (np.ones((4, 6), dtype=bool), ValueError),
    (np.ones((4, 5)), TypeError),
    ([[True] * 5] * 4, TypeError),
    (np.eye(4, 5, dtype=bool)[:, ::-1] & False, ValueError),   # nothing to normalise
])
def test_bad_mask_raises_before_any_state_changes(mask, exc):
    m = _bn(running_stats="exact")
    rng = np.random.default_rng(12)
    m(rng.normal(size=(4, 3, 5)))
    before = m.state_dict()
    with pytest.raises(exc, match="mask|masked"):
        m(rng.normal(size=(4, 3, 5)), mask)
    for k, v in m.state_dict().items():
        assert np.array_equal(v, before[k])
    with pytest.raises(ValueError, match="mask"):
        m(rng.normal(size=(4, 3)), np.ones((4, 3), dtype=bool))
