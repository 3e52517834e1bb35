"""LSTM (NumPy engine): BPTT gradchecks for every norm, torch parity, per-step running stats."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from normlab.functional.lstm import (
    lstm_cell_backward,
    lstm_cell_forward,
    lstm_output_backward,
    lstm_output_forward,
    sigmoid,
)
from normlab.nn.recurrent import LSTM, NORMS
from tests.gradcheck import assert_grad_close, numerical_grad

N, T, I, H = 3, 4, 3, 2


@pytest.fixture(autouse=True)
def numpy_reference_path(monkeypatch, request):
    """The reference NumPy path for the many tiny normalisations these tests make.

    The numba kernels enter a parallel region even for (3, 8) arrays, which costs milliseconds
    per call on a busy 2-core machine (minutes over a gradcheck); the kernel path is checked
    against this one in ``test_kernel_path_matches_numpy_path``.
    """
    if not request.node.name.startswith("test_kernel_path"):
        monkeypatch.setenv("NORMLAB_KERNELS", "numpy")


def make(norm: str, seed: int = 0, **kw) -> LSTM:
    m = LSTM(I, H, norm=norm, rng=seed, dtype=np.float64, **kw)
    # Non-trivial norm gains/biases so their gradients are exercised away from the init values.
    rng = np.random.default_rng(seed + 100)
    for name, p in m.named_parameters():
        if name.startswith("norm_"):
            p.data[...] = rng.uniform(0.5, 1.5, p.shape) if name.endswith("weight") \
                else rng.uniform(-0.5, 0.5, p.shape)
    return m


def loss_weights(rng, n=N, steps=T, hidden=H):
    return (rng.standard_normal((n, steps, hidden)), rng.standard_normal((n, hidden)),
            rng.standard_normal((n, hidden)))


# -- the pure pointwise pieces ------------------------------------------------------------------
def test_sigmoid_matches_definition_and_does_not_overflow():
    x = np.linspace(-30, 30, 61)
    np.testing.assert_allclose(sigmoid(x), 1 / (1 + np.exp(-x)), rtol=1e-12, atol=1e-15)
    with np.errstate(over="raise"):
        assert sigmoid(np.array([-1e4, 1e4])).tolist() == [0.0, 1.0]


def test_cell_and_output_gradcheck():
    rng = np.random.default_rng(0)
    pre, c_prev = rng.standard_normal((N, 4 * H)), rng.standard_normal((N, H))
    r_c, r_h = rng.standard_normal((N, H)), rng.standard_normal((N, H))

    def loss():
        c, gates = lstm_cell_forward(pre, c_prev)
        h, _ = lstm_output_forward(gates.o, np.sin(c))
        return float((c * r_c).sum() + (h * r_h).sum())

    c, gates = lstm_cell_forward(pre, c_prev)
    _, tanh_c = lstm_output_forward(gates.o, np.sin(c))
    do, dc_hat = lstm_output_backward(r_h, gates.o, tanh_c)
    dpre, dc_prev = lstm_cell_backward(r_c + dc_hat * np.cos(c), do, gates)
    assert_grad_close(dpre, numerical_grad(loss, pre))
    assert_grad_close(dc_prev, numerical_grad(loss, c_prev))


# -- BPTT gradchecks ------------------------------------------------------------------------
def gradcheck_module(m: LSTM, x: np.ndarray, hx=None, last_only: bool = False) -> None:
    r_out, r_h, r_c = loss_weights(np.random.default_rng(7))
    if last_only:
        r_out[:, :-1] = 0

    def loss():
        out, (h_n, c_n) = m(x, hx)
        return float((out * r_out).sum() + (h_n[0] * r_h).sum() + (c_n[0] * r_c).sum())

    m.zero_grad()
    m(x, hx)
    dx = m.backward(r_out, dh_n=r_h[None], dc_n=r_c)
    grads = {name: p.grad.copy() for name, p in m.named_parameters()}
    assert_grad_close(dx, numerical_grad(loss, x))
    for name, p in m.named_parameters():
        try:
            assert_grad_close(grads[name], numerical_grad(loss, p.data))
        except AssertionError as e:
            raise AssertionError(f"gradient of {name}") from e
    if hx is not None:
        assert_grad_close(m.grad_hx[0], numerical_grad(loss, hx[0]))
        assert_grad_close(m.grad_hx[1], numerical_grad(loss, hx[1]))


@pytest.mark.parametrize("norm", NORMS)
def test_bptt_gradcheck_train(norm):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((N, T, I))
    hx = (rng.standard_normal((1, N, H)), rng.standard_normal((1, N, H)))
    gradcheck_module(make(norm), x, hx)


@pytest.mark.parametrize("norm", NORMS)
def test_bptt_gradcheck_zero_initial_state_last_step_only(norm):
    x = np.random.default_rng(2).standard_normal((N, T, I))
    gradcheck_module(make(norm), x, last_only=True)


@pytest.mark.parametrize("norm", ["recurrent_batch", "sequence_batch"])
def test_bptt_gradcheck_eval_uses_frozen_statistics(norm):
    rng = np.random.default_rng(3)
    m = make(norm)
    m(rng.standard_normal((5, T - 1, I)) * 2 + 1)  # fills running stats; 3 steps < T
    m.eval()
    gradcheck_module(m, rng.standard_normal((N, T, I)))


# -- parity with torch.nn.LSTM ------------------------------------------------------------------
def torch_parity(torch, n, steps, inp, hidden, dtype, with_hx, seed, rtol, atol):
    rng = np.random.default_rng(seed)
    ref = torch.nn.LSTM(inp, hidden, batch_first=True).to(
        torch.float64 if dtype == np.float64 else torch.float32)
    m = LSTM(inp, hidden, dtype=dtype, rng=seed)
    m.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    assert list(m.state_dict()) == list(ref.state_dict())
    x = rng.standard_normal((n, steps, inp)).astype(dtype)
    hx = None
    if with_hx:
        hx = tuple(rng.standard_normal((1, n, hidden)).astype(dtype) for _ in range(2))
    r_out, r_h, r_c = (a.astype(dtype) for a in loss_weights(rng, n, steps, hidden))

    xt = torch.tensor(x, requires_grad=True)
    hxt = None if hx is None else tuple(torch.tensor(a, requires_grad=True) for a in hx)
    out_t, (h_t, c_t) = ref(xt, hxt)
    loss = ((out_t * torch.tensor(r_out)).sum() + (h_t[0] * torch.tensor(r_h)).sum()
            + (c_t[0] * torch.tensor(r_c)).sum())
    loss.backward()

    out, (h_n, c_n) = m(x, hx)
    dx = m.backward(r_out, dh_n=r_h, dc_n=r_c[None])
    close = dict(rtol=rtol, atol=atol)
    np.testing.assert_allclose(out, out_t.detach().numpy(), **close)
    np.testing.assert_allclose(h_n, h_t.detach().numpy(), **close)
    np.testing.assert_allclose(c_n, c_t.detach().numpy(), **close)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **close)
    for name, p in ref.named_parameters():
        np.testing.assert_allclose(getattr(m, name).grad, p.grad.numpy(), **close, err_msg=name)
    if with_hx:
        np.testing.assert_allclose(m.grad_hx[0], hxt[0].grad.numpy(), **close)
        np.testing.assert_allclose(m.grad_hx[1], hxt[1].grad.numpy(), **close)
    assert out.dtype == dtype and dx.dtype == dtype


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 2e-5)])
@pytest.mark.parametrize("with_hx", [False, True])
def test_none_matches_torch_lstm(torch, dtype, tol, with_hx):
    torch.manual_seed(0)
    torch_parity(torch, 5, 7, 4, 6, dtype, with_hx, 0, rtol=tol, atol=tol)


@settings(max_examples=15)
@given(n=st.integers(1, 6), steps=st.integers(1, 9), inp=st.integers(1, 5),
       hidden=st.integers(1, 7), with_hx=st.booleans(), seed=st.integers(0, 2**16))
def test_none_matches_torch_lstm_random_shapes(torch, n, steps, inp, hidden, with_hx, seed):
    torch.manual_seed(seed)
    torch_parity(torch, n, steps, inp, hidden, np.float64, with_hx, seed, rtol=1e-9, atol=1e-11)


def test_torch_state_dict_loads_non_strictly_into_normalized_lstm(torch):
    ref = torch.nn.LSTM(I, H, batch_first=True)
    m = LSTM(I, H, norm="layer")
    m.load_state_dict({k: v.numpy() for k, v in ref.state_dict().items()}, strict=False)
    np.testing.assert_array_equal(m.weight_hh_l0.data, ref.weight_hh_l0.detach().numpy())
    with pytest.raises(ValueError, match="missing keys: norm_ih.weight"):
        m.load_state_dict({k: v.numpy() for k, v in ref.state_dict().items()})


# -- normalization semantics ----------------------------------------------------------------
def test_layer_norm_normalizes_gate_pre_activations_per_sample():
    """Ba et al. eq. 20: with unit gains, LN(W_x x) has zero mean / unit variance over 4H."""
    m = LSTM(I, H, norm="layer", dtype=np.float64, rng=0)
    x = np.random.default_rng(0).standard_normal((N, T, I)) * 5 + 3
    a_x, _ = m.norm_ih.forward_seq(x @ m.weight_ih_l0.data.T)
    np.testing.assert_allclose(a_x.mean(axis=-1), 0, atol=1e-12)
    np.testing.assert_allclose(a_x.var(axis=-1), 1, rtol=1e-3)


def test_recurrent_batch_gamma_init_is_a_tenth():
    m = LSTM(I, H, norm="recurrent_batch")
    for norm in (m.norm_ih, m.norm_hh, m.norm_c):
        np.testing.assert_array_equal(norm.weight.data, np.float32(0.1))
    np.testing.assert_array_equal(m.norm_c.bias.data, 0)
    assert m.norm_ih.bias is None and m.norm_hh.bias is None
    np.testing.assert_array_equal(LSTM(I, H, norm="sequence_batch").norm_ih.weight.data, 1)


def ema(old, new, momentum=0.1):
    return (1 - momentum) * old + momentum * new


def test_recurrent_batch_running_stats_per_time_step():
    rng = np.random.default_rng(0)
    m = LSTM(I, H, norm="recurrent_batch", dtype=np.float64, rng=0)
    w_ih, w_hh = m.weight_ih_l0.data, m.weight_hh_l0.data
    x = rng.standard_normal((6, 3, I)) + np.arange(3)[None, :, None]  # step-dependent mean
    out, (_, c_n) = m(x)
    assert m.norm_ih.running_mean.shape == (3, 4 * H)
    z_x = x @ w_ih.T
    np.testing.assert_allclose(m.norm_ih.running_mean, ema(0, z_x.mean(axis=0)))
    np.testing.assert_allclose(m.norm_ih.running_var, ema(1, z_x.var(axis=0, ddof=1)))
    # h_0 = 0: W_h h_0 is constant zero at step 0; later steps see h_{t-1} = out[:, t-1].
    z_h = np.concatenate([np.zeros((6, 1, 4 * H)), out[:, :-1] @ w_hh.T], axis=1)
    np.testing.assert_allclose(m.norm_hh.running_mean, ema(0, z_h.mean(axis=0)), atol=1e-15)
    np.testing.assert_allclose(m.norm_hh.running_var, ema(1, z_h.var(axis=0, ddof=1)))
    np.testing.assert_allclose(m.norm_c.running_mean[-1], ema(0, c_n[0].mean(axis=0)))
    np.testing.assert_array_equal(m.norm_ih.num_batches_tracked, [1, 1, 1])

    # A longer sequence grows the buffers: new rows start from the last row, then update.
    before = m.norm_ih.running_mean.copy()
    x2 = rng.standard_normal((6, 5, I))
    m(x2)
    z_x2 = x2 @ w_ih.T
    expect = ema(np.concatenate([before, before[-1:], before[-1:]]), z_x2.mean(axis=0))
    np.testing.assert_allclose(m.norm_ih.running_mean, expect)
    np.testing.assert_array_equal(m.norm_ih.num_batches_tracked, [2, 2, 2, 1, 1])

    # A shorter one only updates its own steps.
    before = m.norm_ih.running_mean.copy()
    x3 = rng.standard_normal((6, 2, I))
    m(x3)
    np.testing.assert_allclose(m.norm_ih.running_mean[:2], ema(before[:2], (x3 @ w_ih.T).mean(0)))
    np.testing.assert_array_equal(m.norm_ih.running_mean[2:], before[2:])


def test_recurrent_batch_cumulative_average_counts_per_step():
    rng = np.random.default_rng(1)
    m = LSTM(I, H, norm="recurrent_batch", momentum=None, dtype=np.float64, rng=0)
    xs = [rng.standard_normal((4, steps, I)) for steps in (2, 3, 3)]
    for x in xs:
        m(x)
    z = [x @ m.weight_ih_l0.data.T for x in xs]
    np.testing.assert_allclose(m.norm_ih.running_mean[0], np.mean([a[:, 0].mean(0) for a in z], 0))
    np.testing.assert_allclose(m.norm_ih.running_mean[2], np.mean([a[:, 2].mean(0) for a in z[1:]],
                                                                  0))


def test_recurrent_batch_eval_reuses_last_step_statistics_beyond_longest_sequence():
    rng = np.random.default_rng(2)
    m = LSTM(I, H, norm="recurrent_batch", dtype=np.float64, rng=0)
    for _ in range(3):
        m(rng.standard_normal((8, 3, I)) * 2 + 1)
    padded = LSTM(I, H, norm="recurrent_batch", dtype=np.float64, rng=5)
    sd = m.state_dict()
    for key in list(sd):
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            sd[key] = np.concatenate([sd[key]] + [sd[key][-1:]] * 4)  # explicit rows 3..6
    padded.load_state_dict(sd)
    assert padded.norm_hh.running_var.shape == (7, 4 * H)
    x = rng.standard_normal((4, 7, I))
    m.eval(), padded.eval()
    np.testing.assert_allclose(m(x)[0], padded(x)[0], rtol=1e-13, atol=1e-15)


def test_sequence_batch_statistics_over_batch_and_time():
    rng = np.random.default_rng(3)
    m = LSTM(I, H, norm="sequence_batch", dtype=np.float64, rng=0)
    x = rng.standard_normal((4, 5, I)) * 3 + 1
    m(x)
    z = (x @ m.weight_ih_l0.data.T).reshape(-1, 4 * H)
    np.testing.assert_allclose(m.norm_ih.running_mean, ema(0, z.mean(0))[None])
    np.testing.assert_allclose(m.norm_ih.running_var, ema(1, z.var(0, ddof=1))[None])
    m(rng.standard_normal((4, 9, I)))  # longer sequences share the single set of statistics
    assert m.norm_ih.running_mean.shape == (1, 4 * H)
    np.testing.assert_array_equal(m.norm_ih.num_batches_tracked, [2])


@pytest.mark.parametrize("norm", ["recurrent_batch", "sequence_batch"])
def test_batch_norms_eval_is_per_sample_and_frozen(norm):
    rng = np.random.default_rng(4)
    m = LSTM(I, H, norm=norm, dtype=np.float64, rng=0)
    x = rng.standard_normal((6, T, I))
    train_out = m(x)[0]
    assert not np.allclose(m(x[:3])[0], train_out[:3])  # training: depends on the batch
    m.eval()
    before = m.state_dict()
    eval_out = m(x)[0]
    np.testing.assert_allclose(m(x[:3])[0], eval_out[:3], rtol=1e-13)
    np.testing.assert_allclose(m(x[:1])[0], eval_out[:1], rtol=1e-13)  # N=1 is fine in eval
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


# -- state dicts ------------------------------------------------------------------------------
@pytest.mark.parametrize("norm", NORMS)
def test_state_dict_round_trip(norm):
    rng = np.random.default_rng(5)
    a = make(norm, seed=1)
    a(rng.standard_normal((4, 6, I)))
    sd = a.state_dict()
    b = LSTM(I, H, norm=norm, dtype=np.float64, rng=9)
    b.load_state_dict(sd)
    assert list(b.state_dict()) == list(sd)
    for k, v in b.state_dict().items():
        np.testing.assert_array_equal(v, sd[k], err_msg=k)
    x = rng.standard_normal((3, 8, I))
    a.eval(), b.eval()
    np.testing.assert_array_equal(a(x)[0], b(x)[0])


def test_failed_load_changes_nothing():
    a = LSTM(I, H, norm="recurrent_batch", dtype=np.float64, rng=0)
    a(np.random.default_rng(0).standard_normal((4, 5, I)))
    b = LSTM(I, H, norm="recurrent_batch", dtype=np.float64, rng=1)
    before = b.state_dict()
    sd = a.state_dict()
    sd["weight_hh_l0"] = np.zeros((4 * H, H + 1))
    with pytest.raises(ValueError, match="weight_hh_l0"):
        b.load_state_dict(sd)
    after = b.state_dict()
    for k, v in before.items():
        np.testing.assert_array_equal(after[k], v, err_msg=k)


# -- bad input --------------------------------------------------------------------------------
def test_bad_arguments_raise_before_state_changes():
    with pytest.raises(ValueError, match="norm: expected one of .*got 'batch'"):
        LSTM(I, H, norm="batch")
    with pytest.raises(ValueError, match="hidden_size"):
        LSTM(I, 0)
    m = LSTM(I, H, norm="recurrent_batch")
    before = m.state_dict()
    with pytest.raises(ValueError, match=r"x: expected a 3D \(N, T, 3\).*got shape \(2, 4, 5\)"):
        m(np.zeros((2, 4, 5), np.float32))
    with pytest.raises(TypeError, match="x: expected a floating dtype"):
        m(np.zeros((2, 4, I), np.int64))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        m(np.zeros((1, 4, I), np.float32))
    with pytest.raises(ValueError, match=r"h_0: expected shape \(1, 2, 2\)"):
        m(np.zeros((2, 4, I), np.float32), (np.zeros((1, 3, H), np.float32),) * 2)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    LSTM(I, H, norm="sequence_batch")(np.zeros((1, 2, I), np.float32))  # N*T = 2 values: fine
    with pytest.raises(RuntimeError, match="before forward"):
        LSTM(I, H).backward(np.zeros((2, 4, H)))
    m = LSTM(I, H)
    m(np.zeros((2, 4, I), np.float32))
    with pytest.raises(ValueError, match=r"d_out: expected shape \(2, 4, 2\)"):
        m.backward(np.zeros((2, 3, H), np.float32))
    assert m.weight_ih_l0.grad is None


def test_backward_accumulates_like_torch():
    m = make("layer")
    x = np.random.default_rng(0).standard_normal((N, T, I))
    out, _ = m(x)
    m.backward(np.ones_like(out))
    once = {n: p.grad.copy() for n, p in m.named_parameters()}
    m(x)
    m.backward(np.ones_like(out))
    for n, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, 2 * once[n], rtol=1e-12, err_msg=n)


# -- the docstring example trains ---------------------------------------------------------------
@pytest.mark.parametrize("norm", NORMS)
def test_docstring_example_learns_digits(norm):
    from importlib.resources import files

    from normlab import nn, optim

    d = np.load(files("normlab") / "data/digits.npz")
    x, y = (d["images"] / 16.0).astype(np.float32)[:512], d["labels"].astype(np.int64)[:512]
    lstm = LSTM(8, 32, norm=norm, rng=0)
    head, ce = nn.Linear(32, 10, rng=0), nn.CrossEntropyLoss()
    opt = optim.SGD(lstm.parameters() + head.parameters(), lr=0.5, momentum=0.9)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(60):
        idx = rng.choice(len(x), 64, replace=False)
        out, _ = lstm(x[idx])
        losses.append(ce(head(out[:, -1]), y[idx]))
        d_out = np.zeros_like(out)
        d_out[:, -1] = head.backward(ce.backward())
        lstm.backward(d_out)
        opt.step()
        opt.zero_grad()
    assert np.isfinite(losses).all()
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:5]), losses


def test_docstring_example_runs_as_written():
    import os
    import subprocess
    import sys

    import normlab.nn.recurrent as recurrent

    doc = recurrent.__doc__
    block = doc[doc.index("pixel rows with I=8 pixels each::"):].split("\n\n")[1]
    code = "\n".join(line[4:] for line in block.splitlines())
    assert "range(300)" in code
    code = code.replace("range(300)", "range(100)") + "\nprint(loss)"
    # A fresh process with one BLAS thread: multi-threaded BLAS on a busy 2-core machine spins.
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert float(run.stdout.split()[-1]) < 1.0  # chance level is ln(10) = 2.3


def test_backward_without_d_out_equals_zero_d_out():
    m = make("recurrent_batch")
    x = np.random.default_rng(0).standard_normal((N, T, I))
    dh = np.random.default_rng(1).standard_normal((N, H))
    m(x)
    dx_none = m.backward(None, dh_n=dh)
    g_none = {n: p.grad.copy() for n, p in m.named_parameters()}
    m.zero_grad()
    dx_zero = m.backward(np.zeros((N, T, H)), dh_n=dh)
    np.testing.assert_array_equal(dx_none, dx_zero)
    for n, p in m.named_parameters():
        np.testing.assert_array_equal(p.grad, g_none[n], err_msg=n)


@pytest.mark.parametrize("norm", NORMS)
def test_kernel_path_matches_numpy_path(norm, monkeypatch):
    """The default kernel dispatch (numba when installed) gives the same LSTM as pure NumPy."""
    rng = np.random.default_rng(6)
    x, d_out = rng.standard_normal((N, T, I)), rng.standard_normal((N, T, H))
    results = []
    for backend in ("auto", "numpy"):
        monkeypatch.setenv("NORMLAB_KERNELS", backend)
        m = make(norm)
        out, (h_n, c_n) = m(x)
        dx = m.backward(d_out, dh_n=h_n)
        m.eval()
        results.append([out, c_n, dx, m(x)[0]] + [p.grad for p in m.parameters()]
                       + list(m.state_dict().values()))
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def torch_normalized_lstm(torch, m: LSTM, x: np.ndarray, norm: str):
    """An independent autograd reference of the normalised LSTM equations, built from torch ops.

    Ba et al. eqs. 20-22 (norm="layer"), Cooijmans et al. eqs. 6-8 (batch statistics of each
    step), Laurent et al. (batch x time statistics of W_x x only).
    """
    fn = torch.nn.functional
    p = {n: torch.tensor(q.data, requires_grad=True) for n, q in m.named_parameters()}
    xt = torch.tensor(x, requires_grad=True)

    def nrm(name, z):
        w, b = p[f"{name}.weight"], p.get(f"{name}.bias")
        if norm == "layer":
            return fn.layer_norm(z, (z.shape[-1],), w, b, 1e-5)
        return fn.batch_norm(z, None, None, w, b, True, 0.0, 1e-5)

    z_x = xt @ p["weight_ih_l0"].T
    if norm == "layer":
        a_x = nrm("norm_ih", z_x)
    elif norm == "recurrent_batch":
        a_x = torch.stack([nrm("norm_ih", z_x[:, t]) for t in range(x.shape[1])], 1)
    else:
        a_x = nrm("norm_ih", z_x.reshape(-1, z_x.shape[-1])).reshape(z_x.shape)
    h = c = torch.zeros(x.shape[0], m.hidden_size, dtype=torch.float64)
    outs = []
    for t in range(x.shape[1]):
        a_h = h @ p["weight_hh_l0"].T
        if norm != "sequence_batch":
            a_h = nrm("norm_hh", a_h)
        i, f, g, o = (a_x[:, t] + a_h + p["bias_ih_l0"] + p["bias_hh_l0"]).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c if norm == "sequence_batch" else nrm("norm_c", c))
        outs.append(h)
    return xt, p, torch.stack(outs, 1), c


@pytest.mark.parametrize("norm", ["layer", "recurrent_batch", "sequence_batch"])
def test_normalized_lstm_matches_torch_autograd_reference(torch, norm):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((5, 6, I)) * 2 + 0.5
    r_out, _, r_c = loss_weights(rng, 5, 6, H)
    m = make(norm, seed=3)
    xt, p, out_t, c_t = torch_normalized_lstm(torch, m, x, norm)
    ((out_t * torch.tensor(r_out)).sum() + (c_t * torch.tensor(r_c)).sum()).backward()
    out, (_, c_n) = m(x)
    dx = m.backward(r_out, dc_n=r_c)
    close = dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out, out_t.detach().numpy(), **close)
    np.testing.assert_allclose(c_n[0], c_t.detach().numpy(), **close)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **close)
    for name, q in m.named_parameters():
        np.testing.assert_allclose(q.grad, p[name].grad.numpy(), **close, err_msg=name)
