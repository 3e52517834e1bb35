"""BatchRenorm1d/2d: BN equivalence, parity with the NumPy functional core, gradcheck."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from normlab import functional as NF


def _pair(torch, cls_name, c, **kw):
    import normlab.torch as nt

    torch.manual_seed(0)
    m = getattr(nt, cls_name)(c, **kw).double()
    with torch.no_grad():
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_()
    return m


@pytest.mark.parametrize("cls_name,bn_name,shape", [("BatchRenorm1d", "BatchNorm1d", (8, 3)),
                                                    ("BatchRenorm1d", "BatchNorm1d", (4, 3, 5)),
                                                    ("BatchRenorm2d", "BatchNorm2d", (3, 2, 4, 4))])
def test_equals_batch_norm_with_r_max_1_d_max_0(torch, cls_name, bn_name, shape):
    m = _pair(torch, cls_name, shape[1], r_max=1.0, d_max=0.0)
    bn = getattr(torch.nn, bn_name)(shape[1]).double()
    bn.load_state_dict(m.state_dict())
    for step in range(3):
        x = (torch.randn(*shape, dtype=torch.float64) * 2 + step).requires_grad_()
        x2 = x.detach().clone().requires_grad_()
        y, y_bn = m(x), bn(x2)
        g = torch.randn_like(y)
        y.backward(g)
        y_bn.backward(g)
        torch.testing.assert_close(y, y_bn)
        torch.testing.assert_close(x.grad, x2.grad)
        torch.testing.assert_close(m.weight.grad, bn.weight.grad)
        torch.testing.assert_close(m.bias.grad, bn.bias.grad)
        m.zero_grad()
        bn.zero_grad()
    for k, v in bn.state_dict().items():
        torch.testing.assert_close(m.state_dict()[k], v)
    m.eval()
    bn.eval()
    x = torch.randn(*shape, dtype=torch.float64)
    torch.testing.assert_close(m(x), bn(x))


@pytest.mark.parametrize("shape", [(8, 3), (4, 3, 2, 2)])
def test_parity_with_numpy_functional_over_steps(torch, shape):
    name = "BatchRenorm1d" if len(shape) == 2 else "BatchRenorm2d"
    r_max, d_max, momentum = 1.3, 0.4, 0.3
    m = _pair(torch, name, shape[1], r_max=r_max, d_max=d_max, momentum=momentum)
    w, b = m.weight.detach().numpy().copy(), m.bias.detach().numpy().copy()
    rm, rv = np.zeros(shape[1]), np.ones(shape[1])
    rng = np.random.default_rng(0)
    for step in range(4):
        x = rng.normal(size=shape) * (1 + step) + step  # drifting: clipping kicks in
        xt = torch.from_numpy(x).requires_grad_()
        y = m(xt)
        y_np, cache = NF.batch_renorm_train(x, rm, rv, w, b, 1e-5, r_max, d_max)
        g = rng.normal(size=shape)
        y.backward(torch.from_numpy(g))
        dx, dw, db = NF.batch_renorm_backward(g, cache)
        np.testing.assert_allclose(y.detach().numpy(), y_np, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(xt.grad.numpy(), dx, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(m.weight.grad.numpy(), dw, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(m.bias.grad.numpy(), db, rtol=1e-9, atol=1e-10)
        m.zero_grad()
        rm, rv = NF.update_running_stats(rm, rv, cache.bn, momentum)
        np.testing.assert_allclose(m.running_mean.numpy(), rm, rtol=1e-12)
        np.testing.assert_allclose(m.running_var.numpy(), rv, rtol=1e-12)
    assert np.any(np.isclose(np.abs(cache.d), d_max)), "test should exercise d clipping"


def test_gradcheck_float64_with_saturated_r_d(torch):
    """r, d are stop-gradient constants; with both clipped they are locally constant, so
    finite differences of the true forward must equal the analytic gradient exactly."""
    import normlab.torch as nt

    m = nt.BatchRenorm2d(2, momentum=0.0, r_max=1.5, d_max=0.5).double()
    with torch.no_grad():
        m.running_mean.fill_(10.0)
        m.running_var.fill_(100.0)
        m.weight.copy_(torch.tensor([0.7, 1.3]))
    x = torch.randn(3, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))
    # weight and bias too
    w = m.weight.detach().clone().requires_grad_()

    def f(x, w):
        return torch.func.functional_call(m, {"weight": w, "bias": m.bias}, (x,))

    assert torch.autograd.gradcheck(f, (x, w))


def test_schedule_follows_num_batches_tracked(torch):
    import normlab.torch as nt
    from normlab.functional import RenormSchedule

    s = RenormSchedule(r_max=3.0, d_max=5.0, warmup=2, r_max_at=6, d_max_at=4)
    m = nt.BatchRenorm1d(3, schedule=s)
    seen = []
    for _ in range(7):
        seen.append(m.limits())
        m(torch.randn(4, 3))
    assert seen == [s(k) for k in range(7)]
    assert seen[0] == (1.0, 0.0) and seen[6] == (3.0, 5.0)
    assert nt.BatchRenorm1d(3).limits() == (1.0, 0.0)  # paper default: BN during warm-up


def test_state_dict_loads_into_torch_batchnorm(torch):
    import normlab.torch as nt

    m = nt.BatchRenorm2d(4)
    m(torch.randn(2, 4, 3, 3))
    bn = torch.nn.BatchNorm2d(4)
    bn.load_state_dict(m.state_dict())  # strict: identical keys
    assert set(bn.state_dict()) == set(m.state_dict())


def test_bad_input(torch):
    import normlab.torch as nt

    m = nt.BatchRenorm2d(4)
    before = m.running_mean.clone()
    with pytest.raises(ValueError, match="channels"):
        m(torch.randn(2, 3, 2, 2))
    with pytest.raises(ValueError, match="4D"):
        m(torch.randn(2, 4))
    with pytest.raises(ValueError, match="more than 1 value"):
        m(torch.randn(1, 4, 1, 1))
    assert torch.equal(m.running_mean, before) and int(m.num_batches_tracked) == 0
    with pytest.raises(ValueError, match="schedule"):
        nt.BatchRenorm1d(3, schedule=NF.RenormSchedule(), r_max=2.0)


@settings(max_examples=20)
@given(n=st.integers(2, 6), c=st.integers(1, 4), spatial=st.sampled_from([(), (3,), (2, 3)]),
       seed=st.integers(0, 2**16))
def test_hypothesis_paper_warmup_is_batch_norm(torch, n, c, spatial, seed):
    """During the paper's warm-up (r_max=1, d_max=0) the layer is BN on any shape."""
    import normlab.torch as nt

    g = torch.Generator().manual_seed(seed)
    shape = (n, c, *spatial)
    cls, bn_cls = ((nt.BatchRenorm2d, torch.nn.BatchNorm2d) if len(shape) == 4
                   else (nt.BatchRenorm1d, torch.nn.BatchNorm1d))
    m, bn = cls(c).double(), bn_cls(c).double()
    x = torch.randn(*shape, generator=g, dtype=torch.float64) * 3 + 2
    torch.testing.assert_close(m(x), bn(x))
    torch.testing.assert_close(m.running_var, bn.running_var)
