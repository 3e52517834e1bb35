"""Optimizers against torch.optim step by step; schedules against torch's schedulers."""

from __future__ import annotations

import numpy as np
import pytest

from normlab import optim
from normlab.nn import Parameter

SHAPES = [(3, 4), (4,)]


def run_both(torch, make_ours, make_theirs, steps=6, seed=0, skip_second_at=None,
             dtype=np.float32, rtol=1e-6, atol=1e-7):
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    ours = [Parameter(v.copy()) for v in values]
    theirs = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in values]
    opt, ref = make_ours(ours), make_theirs(theirs)
    for step in range(steps):
        opt.zero_grad()
        ref.zero_grad()
        for i, (p, q) in enumerate(zip(ours, theirs, strict=True)):
            if i == 1 and step == skip_second_at:
                continue  # a parameter without a gradient this step is skipped by both
            g = rng.standard_normal(p.data.shape).astype(dtype)
            p.grad = g.copy()
            q.grad = torch.from_numpy(g.copy())
        opt.step()
        ref.step()
        for p, q in zip(ours, theirs, strict=True):
            assert p.data.dtype == dtype
            np.testing.assert_allclose(p.data, q.detach().numpy(), rtol=rtol, atol=atol,
                                       err_msg=f"step {step}")
    return opt, ours


@pytest.mark.parametrize("kwargs", [
    {"lr": 0.1},
    {"lr": 0.1, "momentum": 0.9},
    {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-2},
    {"lr": 0.1, "momentum": 0.5, "dampening": 0.3, "weight_decay": 5e-4},
])
def test_sgd_matches_torch(torch, kwargs):
    run_both(torch, lambda ps: optim.SGD(ps, **kwargs),
             lambda ps: torch.optim.SGD(ps, **kwargs), skip_second_at=2)


@pytest.mark.parametrize("kwargs", [
    {"lr": 1e-2},
    {"lr": 3e-3, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 1e-2},
])
def test_adam_matches_torch(torch, kwargs):
    run_both(torch, lambda ps: optim.Adam(ps, **kwargs),
             lambda ps: torch.optim.Adam(ps, **kwargs), skip_second_at=3)


@pytest.mark.parametrize("kwargs", [
    {"lr": 1e-3},                                                 # Cooijmans et al. sec. 5.1
    {"lr": 1e-2, "alpha": 0.9, "eps": 1e-6, "weight_decay": 1e-2},
    {"lr": 1e-2, "momentum": 0.9},
    {"lr": 5e-3, "momentum": 0.5, "centered": True, "weight_decay": 1e-3},
])
@pytest.mark.parametrize("dtype,steps,tol", [(np.float32, 6, (1e-6, 1e-7)),
                                              (np.float64, 30, (1e-13, 1e-15))])
def test_rmsprop_matches_torch(torch, kwargs, dtype, steps, tol):
    """torch.optim.RMSprop's update step by step, a parameter without a gradient skipped by
    both. float32 over 6 steps at the tolerance of the SGD/Adam tests; float64 over 30 steps
    (the running average of g^2 far from its zero start) to 1e-13: the same arithmetic. (In
    float32 torch's fused multiply-adds round once where NumPy rounds twice, an ulp of an
    update per step, which momentum carries on over longer runs.)"""
    run_both(torch, lambda ps: optim.RMSprop(ps, **kwargs),
             lambda ps: torch.optim.RMSprop(ps, **kwargs), steps=steps, skip_second_at=4,
             dtype=dtype, rtol=tol[0], atol=tol[1])


def test_rmsprop_first_step_is_lr_over_sqrt_one_minus_alpha():
    """With v_0 = 0 the first step is g / (sqrt((1 - alpha) g^2) + eps) ~ sign(g) / 0.1 at
    alpha 0.99: the closed form, independent of torch."""
    p = Parameter(np.zeros(3))
    p.grad = np.array([2.0, -0.5, 0.0])
    with np.errstate(invalid="ignore"):
        optim.RMSprop([p], lr=1e-3, eps=0.0).step()
    np.testing.assert_allclose(p.data[:2], [-1e-2, 1e-2], rtol=1e-12)
    assert np.isnan(p.data[2])   # 0 / 0 with eps 0, as torch gives


@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
                                  lambda ps: optim.Adam(ps, lr=0.01),
                                  lambda ps: optim.RMSprop(ps, lr=0.01, momentum=0.9,
                                                           centered=True)])
def test_optimizer_state_dict_resumes_identically(make):
    def grads(step):
        r = np.random.default_rng(step)
        return [r.standard_normal(s).astype(np.float32) for s in SHAPES]

    def train(params, opt, steps):
        for step in steps:
            for p, g in zip(params, grads(step), strict=True):
                p.grad = g
            opt.step()

    full = [Parameter(np.ones(s, dtype=np.float32)) for s in SHAPES]
    train(full, make(full), range(6))
    first = [Parameter(np.ones(s, dtype=np.float32)) for s in SHAPES]
    opt = make(first)
    train(first, opt, range(3))
    resumed = [Parameter(p.data.copy()) for p in first]
    opt2 = make(resumed)
    opt2.load_state_dict(opt.state_dict())
    train(resumed, opt2, range(3, 6))
    for a, b in zip(full, resumed, strict=True):
        np.testing.assert_array_equal(a.data, b.data)


def test_schedules_match_torch_schedulers(torch):
    p = torch.nn.Parameter(torch.zeros(1))
    opt_s, opt_c = torch.optim.SGD([p], lr=0.5), torch.optim.SGD([p], lr=0.5)
    step_s = torch.optim.lr_scheduler.StepLR(opt_s, step_size=3, gamma=0.5)
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt_c, T_max=10, eta_min=0.01)
    for step in range(10):
        assert optim.step_lr(0.5, step, 3, 0.5) == pytest.approx(opt_s.param_groups[0]["lr"])
        assert optim.cosine_lr(0.5, step, 10, 0.01) == pytest.approx(opt_c.param_groups[0]["lr"])
        opt_s.step()
        opt_c.step()
        step_s.step()
        cos.step()


def test_bad_arguments_are_named():
    p = [Parameter(np.zeros(2, dtype=np.float32))]
    with pytest.raises(ValueError, match="lr"):
        optim.SGD(p, lr=-1)
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="params"):
        optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match=r"params\[0\]"):
        optim.SGD([np.zeros(2)], lr=0.1)
    with pytest.raises(ValueError, match=r"betas\[1\]"):
        optim.Adam(p, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match=r"state\['momentum_buffer.0'\]: expected shape"):
        optim.SGD(p, lr=0.1, momentum=0.9).load_state_dict({"momentum_buffer.0": np.zeros(3)})


@pytest.mark.parametrize("kwargs,exc,needle", [
    ({"lr": -1e-3}, ValueError, r"lr: expected a non-negative number, got -0.001"),
    ({"alpha": 1.0}, ValueError, r"alpha: expected a number in \[0, 1\), got 1.0"),
    ({"alpha": -0.1}, ValueError, r"alpha: expected a number in \[0, 1\), got -0.1"),
    ({"alpha": True}, ValueError, r"alpha: expected a number in \[0, 1\), got True"),
    ({"eps": -1e-8}, ValueError, r"eps: expected a non-negative number"),
    ({"momentum": -0.9}, ValueError, r"momentum: expected a non-negative number"),
    ({"weight_decay": float("nan")}, ValueError, r"weight_decay: expected a non-negative"),
    ({"centered": 1}, TypeError, r"centered: expected a bool, got int"),
])
def test_rmsprop_bad_arguments_are_named(kwargs, exc, needle):
    with pytest.raises(exc, match=needle):
        optim.RMSprop([Parameter(np.zeros(2, dtype=np.float32))], **kwargs)


def test_rmsprop_bad_state_is_refused_before_anything_changes():
    p = Parameter(np.ones(2, dtype=np.float32))
    opt = optim.RMSprop([p], momentum=0.9)
    p.grad = np.ones(2, dtype=np.float32)
    opt.step()
    before = opt.state_dict()
    for bad, needle in (({"square_avg.0": np.zeros(3)}, r"state\['square_avg.0'\]: expected shape"),
                        ({"exp_avg.0": np.zeros(2)}, r"unexpected key 'exp_avg.0'"),
                        ({"square_avg.1": np.zeros(2)}, r"unexpected key 'square_avg.1'")):
        with pytest.raises(ValueError, match=needle):
            opt.load_state_dict(bad)
        assert all(np.array_equal(v, opt.state_dict()[k]) for k, v in before.items())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sgd_fused_momentum_is_bitwise_the_numpy_update(monkeypatch, numba, dtype):
    """The one-pass numba momentum update equals the NumPy reference sequence bit for bit,
    including a parameter whose grad is a view (the aliasing-safe fallback)."""
    def run(backend):
        monkeypatch.setenv("NORMLAB_KERNELS", backend)
        rng = np.random.default_rng(7)
        params = [Parameter(rng.standard_normal(s).astype(dtype)) for s in [(50, 30), (30,), (4,)]]
        opt = optim.SGD(params, lr=0.05, momentum=0.9)
        for _ in range(5):
            grads = [rng.standard_normal(p.data.shape).astype(dtype) for p in params]
            for p, g in zip(params[:2], grads[:2], strict=True):
                p.grad = g
            params[2].grad = np.concatenate([grads[2], grads[2]])[:4]   # a view
            opt.step()
        return [p.data for p in params] + list(opt.momentum_buffers)

    for a, b in zip(run("auto"), run("numpy"), strict=True):
        np.testing.assert_array_equal(a, b)
