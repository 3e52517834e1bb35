"""nn.BatchRenorm1d/2d (NumPy engine): gradcheck with r, d constant, schedule stepping, BN
equivalence, bad input, and parity with normlab.torch.BatchRenorm*d over training steps."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from normlab import nn
from normlab.functional.renorm import RenormSchedule
from tests.gradcheck import assert_grad_close, numerical_grad


def _module(cls, c, seed=0, **kw):
    m = cls(c, dtype=np.float64, **kw)
    rng = np.random.default_rng(seed)
    m.weight.data[...] = rng.uniform(0.5, 1.5, c)
    m.bias.data[...] = rng.normal(size=c)
    m.running_mean[...] = rng.normal(size=c)
    m.running_var[...] = rng.uniform(0.5, 3.0, c)
    return m


def _fixed_rd_forward(x, w, b, r, d, eps):
    """Alg. 1 written out with r, d frozen (stop_gradient), independent of the module."""
    axes = (0, *range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mu = x.mean(axis=axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
    return ((x - mu) / np.sqrt(var + eps) * r.reshape(shape) + d.reshape(shape)) \
        * w.reshape(shape) + b.reshape(shape)


@pytest.mark.parametrize("cls,shape", [(nn.BatchRenorm1d, (6, 3)), (nn.BatchRenorm1d, (4, 2, 3)),
                                       (nn.BatchRenorm2d, (3, 2, 2, 3))])
def test_gradcheck_with_r_d_constant(cls, shape):
    m = _module(cls, shape[1], r_max=1.5, d_max=0.5)
    rng = np.random.default_rng(1)
    x = rng.normal(size=shape) * 2 + 1
    rm, rv = m.running_mean.copy(), m.running_var.copy()
    y = m(x)
    # r and d the paper defines, from the running statistics before this step's update
    axes = (0, *range(2, x.ndim))
    sigma = np.sqrt(rv + m.eps)
    r = np.clip(np.sqrt(x.var(axis=axes) + m.eps) / sigma, 1 / 1.5, 1.5)
    d = np.clip((x.mean(axis=axes) - rm) / sigma, -0.5, 0.5)
    w, b = m.weight.data, m.bias.data
    np.testing.assert_allclose(y, _fixed_rd_forward(x, w, b, r, d, m.eps), rtol=1e-12,
                               atol=1e-12)
    assert not np.allclose(r, 1) and not np.allclose(d, 0)   # the correction is active
    g = rng.normal(size=shape)
    dx = m.backward(g)

    def loss() -> float:
        return float(np.sum(_fixed_rd_forward(x, w, b, r, d, m.eps) * g))

    assert_grad_close(dx, numerical_grad(loss, x))
    assert_grad_close(m.weight.grad, numerical_grad(loss, w))
    assert_grad_close(m.bias.grad, numerical_grad(loss, b))


def test_eval_mode_is_batch_norm_with_running_stats_and_has_gradients():
    m = _module(nn.BatchRenorm2d, 3, r_max=2.0, d_max=1.0)
    bn = nn.BatchNorm2d(3, dtype=np.float64)
    bn.load_state_dict(m.state_dict())
    m.eval()
    bn.eval()
    x = np.random.default_rng(2).normal(size=(2, 3, 2, 2))
    np.testing.assert_allclose(m(x), bn(x), rtol=1e-12)
    g = np.ones_like(x)
    np.testing.assert_allclose(m.backward(g), bn.backward(g), rtol=1e-12)


def test_r_max_1_d_max_0_is_batch_norm_including_running_stats():
    m = _module(nn.BatchRenorm1d, 4, r_max=1.0, d_max=0.0)
    bn = nn.BatchNorm1d(4, dtype=np.float64)
    bn.load_state_dict(m.state_dict())
    rng = np.random.default_rng(3)
    for _ in range(3):
        x = rng.normal(size=(5, 4)) * 3
        np.testing.assert_allclose(m(x), bn(x), rtol=1e-12, atol=1e-12)
        g = rng.normal(size=x.shape)
        np.testing.assert_allclose(m.backward(g), bn.backward(g), rtol=1e-10, atol=1e-12)
    for k, v in bn.state_dict().items():
        np.testing.assert_allclose(m.state_dict()[k], v, rtol=1e-12)


def test_schedule_follows_num_batches_tracked():
    s = RenormSchedule(r_max=3.0, d_max=5.0, warmup=1, r_max_at=3, d_max_at=2)
    m = nn.BatchRenorm1d(2, schedule=s)
    seen = []
    for _ in range(4):
        seen.append(m.limits())
        m(np.random.default_rng(0).normal(size=(4, 2)).astype(np.float32))
    assert seen == [s(0), s(1), s(2), s(3)]
    assert seen[0] == (1.0, 0.0) and seen[3] == (3.0, 5.0)


def test_bad_arguments_and_input_change_no_state():
    with pytest.raises(ValueError, match="schedule"):
        nn.BatchRenorm1d(3, schedule=RenormSchedule(), r_max=2.0)
    with pytest.raises(TypeError, match="schedule"):
        nn.BatchRenorm1d(3, schedule=(3.0, 5.0))
    m = nn.BatchRenorm2d(3)
    before = {k: v.copy() for k, v in m.state_dict().items()}
    for bad, exc in ((np.zeros((2, 4, 2, 2), np.float32), ValueError),      # channels
                     (np.zeros((1, 3, 1, 1), np.float32), ValueError),      # 1 value/channel
                     (np.zeros((2, 3), np.float32), ValueError),            # ndim
                     (np.zeros((2, 3, 2, 2), np.int64), TypeError)):        # dtype
        with pytest.raises(exc, match="x"):
            m(bad)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


@settings(max_examples=15)
@given(n=st.integers(2, 5), c=st.integers(1, 4), hw=st.integers(1, 3), steps=st.integers(1, 4),
       seed=st.integers(0, 2**16))
def test_parity_with_torch_module_over_steps(torch, n, c, hw, steps, seed):
    """Same forward, gradients and running statistics as normlab.torch.BatchRenorm2d, with the
    paper's schedule compressed to a few steps so r and d clip differently at every step."""
    import normlab.torch as nt

    s = RenormSchedule(r_max=2.0, d_max=1.0, warmup=1, r_max_at=3, d_max_at=2)
    ours = nn.BatchRenorm2d(c, momentum=0.3, schedule=s, dtype=np.float64)
    ref = nt.BatchRenorm2d(c, momentum=0.3, schedule=s).double()
    rng = np.random.default_rng(seed)
    ours.weight.data[...] = rng.uniform(0.5, 1.5, c)
    ours.bias.data[...] = rng.normal(size=c)
    ref.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.state_dict().items()})
    for step in range(steps):
        x = rng.normal(size=(n, c, hw, hw + 1)) * 2 + step
        g = rng.normal(size=x.shape)
        xt = torch.from_numpy(x).requires_grad_()
        yt = ref(xt)
        yt.backward(torch.from_numpy(g))
        np.testing.assert_allclose(ours(x), yt.detach().numpy(), rtol=1e-9, atol=1e-10)
        ours.zero_grad()
        np.testing.assert_allclose(ours.backward(g), xt.grad.numpy(), rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(ours.weight.grad, ref.weight.grad.numpy(), rtol=1e-8,
                                   atol=1e-10)
        np.testing.assert_allclose(ours.bias.grad, ref.bias.grad.numpy(), rtol=1e-8, atol=1e-10)
        ref.zero_grad()
        for k, v in ref.state_dict().items():
            np.testing.assert_allclose(ours.state_dict()[k], v.numpy(), rtol=1e-12, atol=1e-12)
    ours.eval()
    ref.eval()
    x = rng.normal(size=(n, c, hw, hw))
    with torch.no_grad():
        np.testing.assert_allclose(ours(x), ref(torch.from_numpy(x)).numpy(), rtol=1e-9,
                                   atol=1e-10)
