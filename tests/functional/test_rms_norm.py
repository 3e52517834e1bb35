"""RMSNorm (Zhang & Sennrich 2019): the functional pair's float64 gradients, parity with
torch.nn.functional.rms_norm and torch.nn.RMSNorm (outputs, gradients, state dicts, both
conversions), its bad input, and its place in the family registry (no kernel)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from normlab import functional as F
from normlab import kernels, nn
from tests.gradcheck import assert_grad_close, numerical_grad

SETTINGS = settings(max_examples=25, deadline=None)
TOL = {np.float64: 1e-10, np.float32: 1e-5}


@st.composite
def rms_cases(draw):
    """(input shape, number of trailing normalised dims)."""
    ndim = draw(st.integers(1, 4))
    shape = tuple(draw(st.integers(1, 5)) for _ in range(ndim))
    return shape, draw(st.integers(1, ndim))


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape, k", [((4, 6), 1), ((3, 2, 5), 2), ((2, 3, 2, 2), 1)])
def test_rms_norm_backward_matches_finite_differences(shape, k, affine):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape)
    normalized = shape[len(shape) - k:]
    w = rng.normal(size=normalized) if affine else None
    dy = rng.normal(size=shape)

    def loss():
        return float((F.rms_norm_forward(x, normalized, w, eps=1e-3)[0] * dy).sum())

    _, cache = F.rms_norm_forward(x, normalized, w, eps=1e-3)
    dx, dw = F.rms_norm_backward(dy, cache)
    assert_grad_close(dx, numerical_grad(loss, x))
    if affine:
        assert_grad_close(dw, numerical_grad(loss, w))


def test_rms_norm_output_has_unit_root_mean_square():
    x = np.random.default_rng(1).normal(3.0, 2.0, size=(5, 7))
    y, _ = F.rms_norm_forward(x, (7,), eps=1e-12)
    np.testing.assert_allclose(np.sqrt(np.mean(y ** 2, axis=1)), 1.0, rtol=1e-10)
    assert not np.allclose(y.mean(axis=1), 0.0)   # no re-centering, unlike LayerNorm


@SETTINGS
@given(case=rms_cases(), dtype=st.sampled_from([np.float32, np.float64]),
       affine=st.booleans(), eps=st.sampled_from([None, 1e-5, 0.1]), seed=st.integers(0, 99))
def test_functional_matches_torch(torch, case, dtype, affine, eps, seed):
    shape, k = case
    normalized = shape[len(shape) - k:]
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape).astype(dtype)
    w = rng.normal(size=normalized).astype(dtype) if affine else None
    dy = rng.normal(size=shape).astype(dtype)
    y, cache = F.rms_norm_forward(x, normalized, w, eps)
    dx, dw = F.rms_norm_backward(dy, cache)
    xt = torch.tensor(x, requires_grad=True)
    wt = None if w is None else torch.tensor(w, requires_grad=True)
    yt = torch.nn.functional.rms_norm(xt, normalized, wt, eps)
    yt.backward(torch.tensor(dy))
    tol = TOL[dtype]
    assert y.dtype == dx.dtype == dtype
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=tol, atol=10 * tol)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=tol, atol=100 * tol)
    if affine:
        np.testing.assert_allclose(dw, wt.grad.numpy(), rtol=tol, atol=100 * tol)


@SETTINGS
@given(case=rms_cases(), affine=st.booleans(), eps=st.sampled_from([None, 1e-6, 0.01]),
       seed=st.integers(0, 99))
def test_module_matches_torch_rmsnorm_and_converts_both_ways(torch, case, affine, eps, seed):
    import normlab.torch as nt

    shape, k = case
    normalized = shape[len(shape) - k:]
    rng = np.random.default_rng(seed)
    ours = nn.RMSNorm(normalized, eps=eps, elementwise_affine=affine, dtype=np.float64)
    twin = torch.nn.RMSNorm(normalized, eps=eps, elementwise_affine=affine,
                            dtype=torch.float64)
    assert list(ours.state_dict()) == list(twin.state_dict())
    if affine:
        ours.weight.data[...] = rng.normal(size=normalized)
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    x = rng.normal(size=shape)
    want = twin(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(ours(x), want, rtol=1e-10, atol=1e-12)
    converted = nt.to_torch(nn.Sequential(ours))[0]
    assert type(converted) is torch.nn.RMSNorm
    assert (converted.eps, converted.elementwise_affine) == (eps, affine)
    np.testing.assert_allclose(converted(torch.from_numpy(x)).detach().numpy(), want,
                               rtol=1e-10, atol=1e-12)
    back = nt.from_torch(torch.nn.Sequential(twin))[0]
    assert type(back) is nn.RMSNorm and (back.eps, back.elementwise_affine) == (eps, affine)
    np.testing.assert_allclose(back(x), want, rtol=1e-10, atol=1e-12)


def test_module_backward_accumulates_the_gain_gradient():
    rng = np.random.default_rng(2)
    m = nn.RMSNorm(4, dtype=np.float64)
    x, dy = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    m(x)
    m.backward(dy)
    m(x)
    dx = m.backward(dy)
    _, cache = F.rms_norm_forward(x, (4,), np.ones(4))
    want_dx, want_dw = F.rms_norm_backward(dy, cache)
    np.testing.assert_allclose(dx, want_dx)
    np.testing.assert_allclose(m.weight.grad, 2 * want_dw)


def test_eps_none_is_the_input_dtypes_machine_epsilon():
    x = np.full((1, 3), 1e-4, np.float32)
    y, _ = F.rms_norm_forward(x, (3,))
    want = x / np.sqrt(np.float32(1e-8) + np.finfo(np.float32).eps)
    np.testing.assert_allclose(y, want, rtol=1e-5)


@pytest.mark.parametrize("call, match", [
    (lambda: F.rms_norm_forward(np.ones((2, 3)), (4,)), "x: expected trailing dims"),
    (lambda: F.rms_norm_forward(np.ones((2, 3)), (3,), eps=0.0), "eps: expected a positive"),
    (lambda: F.rms_norm_forward(np.ones((2, 3)), (3,), np.ones(2)), "weight"),
    (lambda: nn.RMSNorm(0), "normalized_shape"),
    (lambda: nn.RMSNorm(3, eps=-1.0), "eps"),
])
def test_bad_input_is_refused_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_a_family_without_a_kernel_takes_the_reference_path(monkeypatch):
    monkeypatch.setenv("NORMLAB_KERNELS", "auto")
    monkeypatch.setattr(kernels, "backend", lambda: "numba")   # as if numba were installed
    x = np.ones((2, 3), np.float32)
    assert kernels.FAMILIES["rms"] is None
    assert kernels.for_array(x, "rms") is None
    assert kernels.for_array(x, "layer") is not None or not kernels._numba_installed()
    with pytest.raises(ValueError, match="family: expected one of"):
        kernels.for_array(x, "nope")


def test_the_registry_feeds_fold_convert_and_bench():
    from normlab.bench.cases import FULL_CASES, TINY_CASES
    from normlab.fold.declared import layer_shapes

    assert layer_shapes("l", "RMSNorm", {"normalized_shape": (3, 4), "eps": None,
                                         "elementwise_affine": True}) == {"weight": (3, 4)}
    assert layer_shapes("l", "RMSNorm", {"normalized_shape": 3, "eps": None,
                                         "elementwise_affine": False}) == {}
    assert [c.family for c in FULL_CASES if c.name == "RMSNorm"] == ["rms"]
    assert [c.family for c in TINY_CASES if c.name == "RMSNorm"] == ["rms"]
