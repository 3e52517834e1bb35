"""The NumPy engine's LSTM trainer: its backward enters the loss gradient as dL/dh_T, which must
give, bit for bit, what the general path (dL/d output for every step, zero but the last) gives."""

from __future__ import annotations

import numpy as np
import pytest

from normlab.engines.numpy_lstm import NumpyLstmTrainer, build_lstm, clip_grad_norm
from normlab.nn.recurrent import NORMS


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("norm", NORMS)
def test_last_step_gradient_as_dh_n_is_exact(monkeypatch, backend, norm):
    monkeypatch.setenv("NORMLAB_KERNELS", backend)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 5, 3)).astype(np.float32)
    y = rng.integers(0, 4, 6)
    trainer = NumpyLstmTrainer(*build_lstm(3, 7, 4, norm, np.random.default_rng(1)), "sgd",
                               0.5, 1.0)
    reference = NumpyLstmTrainer(*build_lstm(3, 7, 4, norm, np.random.default_rng(1)), "sgd",
                                 0.5, 1.0)
    for _ in range(3):
        loss = trainer.train_step(x, y)
        r = reference
        r.opt.zero_grad()
        out, _ = r.lstm(x)
        ref_loss = r.loss(r.head(out[:, -1]), y)
        d_out = np.zeros_like(out)
        d_out[:, -1] = r.head.backward(r.loss.backward())
        r.lstm.backward_params(d_out)
        clip_grad_norm(r.params, r.clip)
        r.opt.step()
        assert loss == float(ref_loss)
        np.testing.assert_array_equal(trainer.gradient(), reference.gradient())
    for a, b in zip(trainer.params, reference.params, strict=True):
        np.testing.assert_array_equal(a.data, b.data)
