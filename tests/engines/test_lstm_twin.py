"""The torch twin of the normalised LSTMs (normlab.torch.lstm.NormLSTM, normlab.engines.torch_lstm)
in lockstep with the NumPy engine: same initial weights, same batches and initial states, and
after each of 20 steps the same loss, clipped gradient, weights, running statistics and
optimizer state (float32 round-off).

Before each step the twin loads the NumPy engine's state, so every comparison is of one step
from one state: run free, 20 SGD steps at lr 0.5 amplify float32 round-off chaotically, and
whether one gradient entry at step 14 stayed within the bound depended on which kernels torch
had picked for earlier tests in the same process."""

from __future__ import annotations

import numpy as np
import pytest

from normlab.engines import make_lstm_trainer

STEPS, N, T, I, H, CLASSES = 20, 16, 6, 5, 8, 4
CLIP = 0.3   # small enough that steps are clipped


def batches(seed: int, noise: float):
    rng = np.random.default_rng(seed)
    teacher = rng.standard_normal((T * I, CLASSES)).astype(np.float32)
    for _ in range(STEPS):
        x = rng.standard_normal((N, T, I), dtype=np.float32)
        y = np.argmax(x.reshape(N, -1) @ teacher, axis=1)
        hx = None if not noise else (rng.normal(0, noise, (N, H)).astype(np.float32),
                                     np.zeros((N, H), np.float32))
        yield x, y, hx


def both(norm: str, optimizer: str, lr: float):
    cfg = {"norm": norm, "hidden": H, "lr": lr, "clip": CLIP, "optimizer": optimizer}
    return [make_lstm_trainer(engine, I, T, CLASSES, cfg, np.random.default_rng(3))
            for engine in ("numpy", "torch")]


def close(a, b, what: str, rtol=2e-4) -> None:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    np.testing.assert_allclose(b.reshape(a.shape), a, rtol=rtol,
                               atol=rtol * max(1.0, float(np.abs(a).max())), err_msg=what)


def sync(torch_run, numpy_run) -> None:
    """The twin takes every array the NumPy engine has (weights, running statistics, optimizer
    state), in its own shapes; what only the twin keeps (steps seen, step counts) stays."""
    state = torch_run.state()
    for key, value in numpy_run.state().items():
        state[key] = np.asarray(value).reshape(state[key].shape)
    torch_run.load_state(state)


@pytest.mark.parametrize("norm,optimizer,lr,noise", [
    ("none", "sgd", 0.5, 0.0), ("layer", "sgd", 0.5, 0.0),
    ("recurrent_batch", "sgd", 0.5, 0.1), ("sequence_batch", "sgd", 0.5, 0.0),
    ("recurrent_batch", "rmsprop", 3e-3, 0.1)])
def test_twins_train_in_lockstep(torch, norm, optimizer, lr, noise):
    numpy_run, torch_run = both(norm, optimizer, lr)
    clipped = 0
    for step, (x, y, hx) in enumerate(batches(0, noise)):
        if step:
            sync(torch_run, numpy_run)
        loss = numpy_run.train_step(x, y, hx)
        close(loss, torch_run.train_step(x, y, hx), f"loss at step {step}")
        g = numpy_run.gradient()
        close(g, torch_run.gradient(), f"gradient at step {step}")
        clipped += bool(np.isclose(np.linalg.norm(g), CLIP, rtol=1e-5))
        mine, twin = numpy_run.state(), torch_run.state()
        assert set(mine) <= set(twin), sorted(set(mine) - set(twin))
        for key in mine:
            close(mine[key], twin[key], f"{key} after step {step}")
    assert clipped, "the clipping was never exercised"
    x, y, hx = next(batches(1, noise))
    close(numpy_run.logits(x, hx), torch_run.logits(x, hx), "eval logits", rtol=1e-3)


def test_per_step_statistics_are_per_step(torch):
    """Cooijmans et al. sec. 3: step t's running statistics are those of step t's batches."""
    numpy_run, torch_run = both("recurrent_batch", "sgd", 0.5)
    x, y, hx = next(batches(0, 0.1))
    w = torch_run.lstm.weight_ih_l0.detach().clone()   # before the step
    torch_run.train_step(x, y, hx)
    bn = torch_run.lstm.norm_ih
    for t in (0, T - 1):   # one batch, momentum 0.1: 0.9 * 0 + 0.1 * the batch mean
        a = torch.from_numpy(x[:, t]) @ w.T
        torch.testing.assert_close(bn.running_mean[t], 0.1 * a.mean(0))
    assert bn.running_mean.shape == (T, 4 * H) and int(bn.steps_seen) == T
    assert bn.num_batches_tracked.tolist() == [1] * T
    assert not torch.allclose(bn.running_mean[0], bn.running_mean[T - 1])
    assert float(bn.weight.detach().mean()) == pytest.approx(0.1, abs=0.05)   # gamma init 0.1


def test_torch_twin_resumes_exactly(torch):
    """state() / load_state() carry weights, per-step statistics and RMSProp's state."""
    _, run = both("recurrent_batch", "rmsprop", 3e-3)
    data = list(batches(2, 0.1))
    for x, y, hx in data[:5]:
        run.train_step(x, y, hx)
    saved = run.state()
    _, resumed = both("recurrent_batch", "rmsprop", 3e-3)
    resumed.load_state(saved)
    for x, y, hx in data[5:10]:
        assert resumed.train_step(x, y, hx) == run.train_step(x, y, hx)
    for k, v in run.state().items():
        np.testing.assert_array_equal(resumed.state()[k], v, err_msg=k)


def test_norm_lstm_bad_input(torch):
    from normlab.torch.lstm import NormLSTM

    with pytest.raises(ValueError, match="norm: expected one of"):
        NormLSTM(3, 4, "batch")
    with pytest.raises((ValueError, TypeError), match="max_steps"):
        NormLSTM(3, 4, "recurrent_batch")
    with pytest.raises(ValueError, match=r"x: expected a 3D \(N, T, 3\) input"):
        NormLSTM(3, 4)(torch.zeros(2, 5, 4))
    with pytest.raises(ValueError, match="engine: expected"):
        make_lstm_trainer("jax", I, T, CLASSES, {"norm": "none", "hidden": H, "lr": 0.1},
                          np.random.default_rng(0))
