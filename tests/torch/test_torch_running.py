"""normlab.torch.BatchNorm*d running-statistics options vs independent float64 references.

References are computed with NumPy on the concatenation of every batch (or of the unpadded
positions), never with the code under test.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.oracles import masked_batch_norm


def _nt():
    import normlab.torch as nt

    return nt


def _batches(rng, sizes, c=3, tail=()):
    """Batches with very different scales/offsets so that split-dependence would show."""
    return [rng.normal(size=(n, c, *tail)) * rng.uniform(0.5, 5) + rng.uniform(-3, 3)
            for n in sizes]


def _per_channel(x):
    """(values, C) view of an (N, C, ...) array: every axis but 1 flattened."""
    return np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])


def _feed(torch, m, batches):
    m.train()
    for b in batches:
        m(torch.from_numpy(b))


# -- defaults are torch, bit for bit ----------------------------------------------------------
@pytest.mark.parametrize("dim,shape", [(1, (6, 3)), (1, (4, 3, 5)), (2, (4, 3, 2, 3)),
                                       (3, (2, 3, 2, 2, 2))])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_default_options_are_bit_identical_to_torch(torch, dim, shape, momentum):
    nt = _nt()
    ours = getattr(nt, f"BatchNorm{dim}d")(3, momentum=momentum)
    ref = getattr(torch.nn, f"BatchNorm{dim}d")(3, momentum=momentum)
    torch.manual_seed(0)
    with torch.no_grad():
        for m in (ours, ref):
            m.weight.copy_(torch.linspace(0.5, 2, 3))
            m.bias.copy_(torch.linspace(-1, 1, 3))
    for step in range(4):
        x = torch.randn(shape) * (step + 1) + step
        g = torch.randn(shape)
        outs = []
        for m in (ours, ref):
            m.train(step < 3)
            xi = x.clone().requires_grad_()
            y = m(xi)
            y.backward(g)
            outs.append((y.detach(), xi.grad, m.weight.grad.clone()))
            m.weight.grad = None
        for a, b in zip(*outs, strict=True):
            assert torch.equal(a, b)
    sd = ours.state_dict()
    assert list(sd) == list(ref.state_dict())
    for k, v in ref.state_dict().items():
        assert torch.equal(sd[k], v)
    fresh = getattr(torch.nn, f"BatchNorm{dim}d")(3, momentum=momentum)
    fresh.load_state_dict(sd, strict=True)


def test_new_buffers_only_when_an_option_needs_them(torch):
    nt = _nt()
    keys = {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}
    for opts in ({"running_stats": "cumulative"}, {"running_stats": "ema_debiased"},
                 {"unbiased": "both"}, {"unbiased": "none"}):
        assert set(nt.BatchNorm1d(3, **opts).state_dict()) == keys
    assert set(nt.BatchNorm1d(3, running_stats="exact").state_dict()) == keys | {
        "num_samples_tracked"}
    assert set(nt.BatchNorm1d(3, skip_nonfinite=True).state_dict()) == keys | {
        "num_batches_skipped"}
    # a state dict round-trips between layers with the same options
    a = nt.BatchNorm2d(3, running_stats="exact", skip_nonfinite=True).double()
    _feed(torch, a, _batches(np.random.default_rng(0), [4, 5], tail=(2, 2)))
    b = nt.BatchNorm2d(3, running_stats="exact", skip_nonfinite=True).double()
    b.load_state_dict(a.state_dict(), strict=True)
    assert int(b.num_samples_tracked) == 9 * 4


# -- exact -----------------------------------------------------------------------------------
@settings(max_examples=25)
@given(sizes=st.lists(st.integers(2, 12), min_size=1, max_size=6), seed=st.integers(0, 2**16),
       unbiased=st.sampled_from(["running", "both", "none"]), length=st.sampled_from([0, 3]))
def test_exact_equals_full_data_moments_whatever_the_split(torch, sizes, seed, unbiased,
                                                           length):
    nt = _nt()
    tail = (length,) if length else ()
    batches = _batches(np.random.default_rng(seed), sizes, tail=tail)
    m = nt.BatchNorm1d(3, running_stats="exact", unbiased=unbiased).double()
    _feed(torch, m, batches)
    data = _per_channel(np.concatenate(batches))
    ddof = 0 if unbiased == "none" else 1
    assert int(m.num_samples_tracked) == len(data)
    assert int(m.num_batches_tracked) == len(sizes)
    np.testing.assert_allclose(m.running_mean.numpy(), data.mean(0), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(m.running_var.numpy(), data.var(0, ddof=ddof), rtol=1e-10)
    # and the same data re-split differently gives the same statistics
    m2 = nt.BatchNorm1d(3, running_stats="exact", unbiased=unbiased).double()
    whole = np.concatenate(batches)
    _feed(torch, m2, [whole[::-1].copy()])  # one batch, reversed order
    np.testing.assert_allclose(m2.running_mean.numpy(), m.running_mean.numpy(), rtol=1e-10,
                               atol=1e-10)
    np.testing.assert_allclose(m2.running_var.numpy(), m.running_var.numpy(), rtol=1e-10)


def test_exact_reset_starts_over(torch):
    nt = _nt()
    rng = np.random.default_rng(1)
    m = nt.BatchNorm1d(3, running_stats="exact").double()
    _feed(torch, m, _batches(rng, [5, 6]))
    m.reset_running_stats()
    assert int(m.num_samples_tracked) == 0
    later = _batches(rng, [4, 7])
    _feed(torch, m, later)
    data = np.concatenate(later)
    np.testing.assert_allclose(m.running_mean.numpy(), data.mean(0), rtol=1e-10)
    np.testing.assert_allclose(m.running_var.numpy(), data.var(0, ddof=1), rtol=1e-10)


# -- cumulative / ema_debiased ----------------------------------------------------------------
@pytest.mark.parametrize("momentum", [0.1, 0.5])
def test_cumulative_is_the_mean_of_batch_statistics(torch, momentum):
    nt = _nt()
    batches = _batches(np.random.default_rng(2), [4, 9, 5, 3])
    m = nt.BatchNorm1d(3, momentum=momentum, running_stats="cumulative").double()
    _feed(torch, m, batches)
    np.testing.assert_allclose(m.running_mean.numpy(), np.mean([b.mean(0) for b in batches], 0),
                               rtol=1e-12)
    np.testing.assert_allclose(m.running_var.numpy(),
                               np.mean([b.var(0, ddof=1) for b in batches], 0), rtol=1e-12)


@settings(max_examples=20)
@given(momentum=st.floats(0.01, 0.9), steps=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_ema_debiased_is_raw_ema_over_one_minus_decay_power(torch, momentum, steps, seed):
    nt = _nt()
    batches = _batches(np.random.default_rng(seed), [5] * steps)
    m = nt.BatchNorm1d(3, momentum=momentum, running_stats="ema_debiased").double()
    _feed(torch, m, batches)
    raw_mean, raw_var = np.zeros(3), np.zeros(3)  # the raw EMA starts at zero (Adam, sec. 3)
    for b in batches:
        raw_mean = (1 - momentum) * raw_mean + momentum * b.mean(0)
        raw_var = (1 - momentum) * raw_var + momentum * b.var(0, ddof=1)
    bias = 1 - (1 - momentum) ** steps
    np.testing.assert_allclose(m.running_mean.numpy(), raw_mean / bias, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(m.running_var.numpy(), raw_var / bias, rtol=1e-9)


# -- unbiased --------------------------------------------------------------------------------
@pytest.mark.parametrize("unbiased", ["running", "both", "none"])
def test_unbiased_choice_forward_and_running_var(torch, unbiased):
    nt = _nt()
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 3, 4)) * 2 + 1
    w, b = np.array([0.5, 1.0, 2.0]), np.array([0.1, -0.2, 0.3])
    m = nt.BatchNorm1d(3, momentum=1.0, unbiased=unbiased).double()
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(w))
        m.bias.copy_(torch.from_numpy(b))
    y = m(torch.from_numpy(x)).detach().numpy()
    data = _per_channel(x)
    fwd_ddof = 1 if unbiased == "both" else 0
    run_ddof = 0 if unbiased == "none" else 1
    shape = (1, 3, 1)
    want = ((x - data.mean(0).reshape(shape)) / np.sqrt(data.var(0, ddof=fwd_ddof).reshape(shape)
                                                        + 1e-5) * w.reshape(shape)
            + b.reshape(shape))
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m.running_var.numpy(), data.var(0, ddof=run_ddof), rtol=1e-12)


def test_unbiased_both_backward_matches_the_closed_form(torch):
    nt = _nt()
    rng = np.random.default_rng(4)
    x, dy = rng.normal(size=(6, 3)) * 3, rng.normal(size=(6, 3))
    w = np.array([0.5, 1.5, -1.0])
    m = nt.BatchNorm1d(3, unbiased="both").double()
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(w))
    xt = torch.from_numpy(x).requires_grad_()
    m(xt).backward(torch.from_numpy(dy))
    n = len(x)
    s = n / (n - 1)
    inv_std = 1 / np.sqrt(s * x.var(0) + 1e-5)
    x_hat = (x - x.mean(0)) * inv_std
    dx_hat = dy * w
    want = inv_std * (dx_hat - dx_hat.mean(0) - s * x_hat * (dx_hat * x_hat).mean(0))
    np.testing.assert_allclose(xt.grad.numpy(), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("affine", [True, False])
def test_gradcheck_unbiased_both_and_mask(torch, affine):
    nt = _nt()
    torch.manual_seed(5)
    m = nt.BatchNorm1d(2, unbiased="both", affine=affine).double()
    if affine:
        with torch.no_grad():
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_()
    x = torch.randn(3, 2, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    assert torch.autograd.gradcheck(lambda t: m(t), (x,))
    assert torch.autograd.gradcheck(lambda t: m(t, mask), (x,))
    m.unbiased = "running"
    assert torch.autograd.gradcheck(lambda t: m(t, mask), (x,))


# -- masks -----------------------------------------------------------------------------------
@settings(max_examples=20)
@given(lengths=st.lists(st.integers(1, 6), min_size=2, max_size=5), seed=st.integers(0, 2**16),
       unbiased=st.sampled_from(["running", "both"]))
def test_mask_equals_bn_on_the_unpadded_concatenation(torch, lengths, seed, unbiased):
    nt = _nt()
    rng = np.random.default_rng(seed)
    n, t, c = len(lengths), max(lengths), 3
    x = rng.normal(size=(n, c, t)) * 2 + 1
    mask = np.arange(t)[None, :] < np.array(lengths)[:, None]
    x.transpose(0, 2, 1)[~mask] = 1e6  # padding garbage must not leak anywhere
    dy = rng.normal(size=(n, c, t))
    w, b = rng.uniform(0.5, 1.5, c), rng.normal(size=c)
    m = nt.BatchNorm1d(c, momentum=0.3, unbiased=unbiased).double()
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(w))
        m.bias.copy_(torch.from_numpy(b))
    xt = torch.from_numpy(x).requires_grad_()
    y = m(xt, torch.from_numpy(mask))
    y.backward(torch.from_numpy(dy))

    ref = masked_batch_norm(x, dy, lengths, w, unbiased)
    real, dy_real, x_hat, dx_real = ref["real"], ref["dy"], ref["x_hat"], ref["dx"]
    count = len(real)
    y_np, dx_np = y.detach().numpy(), xt.grad.numpy()
    assert count > 1
    np.testing.assert_array_equal(y_np.transpose(0, 2, 1)[~mask], 0)
    np.testing.assert_array_equal(dx_np.transpose(0, 2, 1)[~mask], 0)
    np.testing.assert_allclose(y_np.transpose(0, 2, 1)[mask], x_hat * w + b, rtol=1e-10,
                               atol=1e-10)
    np.testing.assert_allclose(dx_np.transpose(0, 2, 1)[mask], dx_real, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(m.weight.grad.numpy(), (dy_real * x_hat).sum(0), rtol=1e-10)
    np.testing.assert_allclose(m.bias.grad.numpy(), dy_real.sum(0), rtol=1e-10)
    np.testing.assert_allclose(m.running_mean.numpy(), 0.3 * real.mean(0), rtol=1e-10)
    np.testing.assert_allclose(m.running_var.numpy(), 0.7 + 0.3 * real.var(0, ddof=1),
                               rtol=1e-10)


def test_mask_in_eval_and_exact_mode(torch):
    nt = _nt()
    rng = np.random.default_rng(6)
    x = rng.normal(size=(3, 2, 5))
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=bool)
    m = nt.BatchNorm1d(2, running_stats="exact").double()
    m(torch.from_numpy(x), torch.from_numpy(mask))
    real = x.transpose(0, 2, 1)[mask]
    assert int(m.num_samples_tracked) == mask.sum()
    np.testing.assert_allclose(m.running_var.numpy(), real.var(0, ddof=1), rtol=1e-12)
    m.eval()
    y = m(torch.from_numpy(x), torch.from_numpy(mask)).detach().numpy().transpose(0, 2, 1)
    want = (real - real.mean(0)) / np.sqrt(real.var(0, ddof=1) + 1e-5)
    np.testing.assert_allclose(y[mask], want, rtol=1e-10)
    np.testing.assert_array_equal(y[~mask], 0)


# -- non-finite batches ----------------------------------------------------------------------
@pytest.mark.parametrize("running_stats", ["ema", "exact", "ema_debiased"])
def test_skip_nonfinite_leaves_running_stats_and_warns_once(torch, running_stats):
    nt = _nt()
    rng = np.random.default_rng(7)
    m = nt.BatchNorm2d(3, running_stats=running_stats, skip_nonfinite=True)
    m(torch.from_numpy(rng.normal(size=(4, 3, 2, 2)).astype(np.float32)))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    bad_nan = rng.normal(size=(4, 3, 2, 2)).astype(np.float32)
    bad_nan[1, 2, 0, 1] = np.nan
    bad_inf = torch.from_numpy(rng.normal(size=(4, 3, 2, 2)).astype(np.float32))
    bad_inf[0, 0, 0, 0] = torch.tensor(60000.0, dtype=torch.float16) * 2  # fp16 overflow: inf
    assert torch.isinf(bad_inf).any()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m(torch.from_numpy(bad_nan))
        m(bad_inf)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "BatchNorm2d(3)" in messages[0]
    after = m.state_dict()
    assert int(after["num_batches_skipped"]) == 2
    for k, v in before.items():
        if k != "num_batches_skipped":
            assert torch.equal(after[k].to(v.dtype), v), k
    m(torch.from_numpy(rng.normal(size=(4, 3, 2, 2)).astype(np.float32)))  # still trains
    assert int(m.num_batches_tracked) == 2 and torch.isfinite(m.running_var).all()


def test_without_skip_a_nan_batch_poisons_the_running_stats_like_torch(torch):
    nt = _nt()
    x = torch.randn(4, 3)
    x[0, 0] = float("nan")
    m = nt.BatchNorm1d(3)
    m(x)
    assert torch.isnan(m.running_mean[0]) and torch.isfinite(m.running_mean[1:]).all()


# -- freeze ----------------------------------------------------------------------------------
def test_freeze_stays_frozen_after_train_until_unfreeze(torch):
    nt = _nt()
    torch.manual_seed(8)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), nt.BatchNorm1d(3),
                                torch.nn.Linear(3, 3), nt.BatchNorm1d(3, running_stats="exact"))
    model(torch.randn(8, 4))
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    nt.freeze(model)
    model.train()
    x = torch.randn(8, 4)
    y = model(x)
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    model.eval()
    assert torch.equal(model(x), y)  # frozen train mode == eval mode
    nt.unfreeze(model)
    model.train()
    model(x)
    assert int(model[1].num_batches_tracked) == 2
    assert not torch.equal(model[1].running_mean, sd["1.running_mean"])


def test_freeze_needs_running_stats(torch):
    nt = _nt()
    model = torch.nn.Sequential(nt.BatchNorm1d(3), nt.BatchNorm1d(3, track_running_stats=False))
    with pytest.raises(ValueError, match="track_running_stats"):
        nt.freeze(model)
    assert not model[0].frozen  # nothing was frozen


# -- bad options -----------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,exc,name", [
    ({"running_stats": "exponential"}, ValueError, "running_stats"),
    ({"running_stats": None}, ValueError, "running_stats"),
    ({"unbiased": True}, ValueError, "unbiased"),
    ({"unbiased": "bessel"}, ValueError, "unbiased"),
    ({"skip_nonfinite": "yes"}, TypeError, "skip_nonfinite"),
    ({"running_stats": "ema_debiased", "momentum": None}, ValueError, "momentum"),
])
def test_bad_options_raise_naming_the_argument(torch, kwargs, exc, name):
    nt = _nt()
    with pytest.raises(exc, match=name):
        nt.BatchNorm1d(3, **kwargs)


@pytest.mark.parametrize("mask_fn,exc", [
    (lambda t: t.ones(4, 6, dtype=t.bool), ValueError),
    (lambda t: t.ones(4, 5), TypeError),
    (lambda t: t.zeros(4, 5, dtype=t.bool), ValueError),   # nothing left to normalise
])
def test_bad_mask_raises_before_any_state_changes(torch, mask_fn, exc):
    nt = _nt()
    m = nt.BatchNorm1d(3, running_stats="exact")
    m(torch.randn(4, 3, 5))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(exc, match="mask|input"):
        m(torch.randn(4, 3, 5), mask_fn(torch))
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k])
    with pytest.raises(ValueError, match="mask"):
        m(torch.randn(4, 3), torch.ones(4, 3, dtype=torch.bool))


def test_ghost_batch_norm_is_train_only_and_takes_remainders(torch):
    """Item 6, torch side: normlab.torch.GhostBatchNorm1d (existing) splits 11 = 4 + 4 + 3 and
    13 = 4 + 4 + 5 (a remainder of one joins the previous virtual batch); eval = plain BN."""
    nt = _nt()
    rng = np.random.default_rng(9)
    for n, parts in ((11, [4, 4, 3]), (13, [4, 4, 5])):
        x = rng.normal(size=(n, 2)) * np.arange(1, n + 1)[:, None]
        m = nt.GhostBatchNorm1d(2, 4, affine=False).double()
        y = m(torch.from_numpy(x)).detach().numpy()
        start = 0
        for k in parts:
            chunk = x[start:start + k]
            want = (chunk - chunk.mean(0)) / np.sqrt(chunk.var(0) + 1e-5)
            np.testing.assert_allclose(y[start:start + k], want, rtol=1e-10)
            start += k
        m.eval()
        want = (x - m.running_mean.numpy()) / np.sqrt(m.running_var.numpy() + 1e-5)
        np.testing.assert_allclose(m(torch.from_numpy(x)).detach().numpy(), want, rtol=1e-10)
