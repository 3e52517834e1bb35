"""GhostBatchNorm1d/2d: parity with the NumPy functional core, BN equivalence, gradcheck."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from normlab import functional as NF


def _ghost(torch, shape, v, **kw):
    import normlab.torch as nt

    cls = nt.GhostBatchNorm1d if len(shape) <= 3 else nt.GhostBatchNorm2d
    m = cls(shape[1], v, **kw).double()
    with torch.no_grad():
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_()
    return m


@pytest.mark.parametrize("shape,v", [((10, 3), 4), ((9, 3), 4), ((8, 2, 3), 2),
                                     ((5, 2, 2, 2), 2)])
def test_parity_with_numpy_functional(torch, shape, v):
    torch.manual_seed(0)
    momentum = 0.2
    m = _ghost(torch, shape, v, momentum=momentum)
    w, b = m.weight.detach().numpy().copy(), m.bias.detach().numpy().copy()
    rm, rv = np.zeros(shape[1]), np.ones(shape[1])
    rng = np.random.default_rng(1)
    for _ in range(3):
        x = rng.normal(size=shape) * np.linspace(0.5, 3, shape[0]).reshape(-1, *[1] * (
            len(shape) - 1))
        xt = torch.from_numpy(x).requires_grad_()
        y = m(xt)
        y_np, cache = NF.ghost_batch_norm_train(x, v, w, b)
        g = rng.normal(size=shape)
        y.backward(torch.from_numpy(g))
        dx, dw, db = NF.ghost_batch_norm_backward(g, cache)
        np.testing.assert_allclose(y.detach().numpy(), y_np, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(xt.grad.numpy(), dx, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(m.weight.grad.numpy(), dw, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(m.bias.grad.numpy(), db, rtol=1e-9, atol=1e-10)
        m.zero_grad()
        rm, rv = NF.ghost_running_update(rm, rv, cache, momentum)
        np.testing.assert_allclose(m.running_mean.numpy(), rm, rtol=1e-12)
        np.testing.assert_allclose(m.running_var.numpy(), rv, rtol=1e-12)
    assert int(m.num_batches_tracked) == 3  # one update per step, not per virtual batch


@pytest.mark.parametrize("shape", [(6, 3), (4, 2, 3, 3)])
def test_whole_batch_is_batch_norm(torch, shape):
    torch.manual_seed(2)
    m = _ghost(torch, shape, 64)
    bn = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(shape[1]).double()
    bn.load_state_dict(m.state_dict())  # identical keys: loads strictly
    for _ in range(2):
        x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
        x2 = x.detach().clone().requires_grad_()
        y, y_bn = m(x), bn(x2)
        y.sum().backward()
        (y_bn * 1).sum().backward()
        torch.testing.assert_close(y, y_bn)
        torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(m.running_var, bn.running_var)
    m.eval()
    bn.eval()
    x = torch.randn(*shape, dtype=torch.float64)
    torch.testing.assert_close(m(x), bn(x))  # eval: running statistics, like BN


def test_gradcheck(torch):
    m = _ghost(torch, (7, 2), 3)
    x = torch.randn(7, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))


def test_remainder_of_one_does_not_crash(torch):
    m = _ghost(torch, (9, 2), 4)
    y = m(torch.randn(9, 2, dtype=torch.float64))
    # the last virtual batch is samples 4..8 (5 samples), normalised together
    torch.testing.assert_close(y[4:].mean(0), m.bias.detach(), atol=1e-10, rtol=0)


def test_bad_input(torch):
    import normlab.torch as nt

    with pytest.raises(ValueError, match="virtual_batch_size"):
        nt.GhostBatchNorm1d(3, 0)
    m = nt.GhostBatchNorm1d(3, 1)
    with pytest.raises(ValueError, match="more than 1 value"):
        m(torch.randn(4, 3))
    assert int(m.num_batches_tracked) == 0


@settings(max_examples=20)
@given(n=st.integers(2, 12), v=st.integers(2, 5), c=st.integers(1, 3),
       spatial=st.sampled_from([(), (2,), (2, 2)]), seed=st.integers(0, 2**16))
def test_hypothesis_parity_random_shapes(torch, n, v, c, spatial, seed):
    rng = np.random.default_rng(seed)
    shape = (n, c, *spatial)
    m = _ghost(torch, shape, v)
    w, b = m.weight.detach().numpy(), m.bias.detach().numpy()
    x = rng.normal(size=shape)
    y = m(torch.from_numpy(x))
    y_np, cache = NF.ghost_batch_norm_train(x, v, w, b)
    np.testing.assert_allclose(y.detach().numpy(), y_np, rtol=1e-10, atol=1e-10)
    rm, rv = NF.ghost_running_update(np.zeros(c), np.ones(c), cache, 0.1)
    np.testing.assert_allclose(m.running_var.numpy(), rv, rtol=1e-12)
