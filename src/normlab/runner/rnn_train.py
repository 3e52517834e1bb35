"""One resumable LSTM classification run for ``rnn-norm``, on either engine.

An image is read as a sequence: row by row (T = H steps of W pixels) or, as in Cooijmans et al.
2016 sec. 5.1, pixel by pixel (T = H*W steps of one pixel: 784 for MNIST). A single-layer LSTM
reads it and a Linear head classifies its last hidden state; every step clips the global
gradient norm (Cooijmans: "gradient clipping at 1") before the optimizer (plain SGD, or
RMSProp as in their sec. 5.1): :mod:`normlab.engines.numpy_lstm` and its torch twin
:mod:`normlab.engines.torch_lstm`, from the same initial weights. Each evaluation point also
checkpoints the run (weights, running statistics, optimizer state, the h_0 noise generator), so
a killed run resumes exactly.
"""

from __future__ import annotations

import numpy as np

from ..engines import make_lstm_trainer
from ..engines.numpy_lstm import OPTIMIZERS, clip_grad_norm, make_optimizer
from .base import RunContext
from .holdout import parts
from .train import epoch_batch

EVAL_VALUES = 100_000   # eval chunks hold at most this many (sample, step) pairs: T=784 -> 127
__all__ = ["OPTIMIZERS", "accuracy", "clip_grad_norm", "initial_state", "make_optimizer",
           "sequences", "train_lstm"]


def sequences(x: np.ndarray, pixels: bool) -> np.ndarray:
    """(N, H, W) images as (N, T, I): H rows of W pixels, or (``pixels``) H*W single pixels."""
    return x.reshape(len(x), -1, 1) if pixels else x


def initial_state(noise: float, n: int, hidden: int, rng: np.random.Generator):
    """(h_0, c_0) with h_0 ~ N(0, noise^2) and c_0 = 0, or None (zeros) when ``noise`` is 0."""
    if not noise:
        return None
    return (rng.normal(0.0, noise, (n, hidden)).astype(np.float32),
            np.zeros((n, hidden), dtype=np.float32))


def accuracy(trainer, x: np.ndarray, y: np.ndarray, hidden: int, noise: float = 0.0,
             rng: np.random.Generator | None = None) -> float:
    """Eval-mode accuracy over (N, T, I) sequences ``x``, in chunks that bound memory."""
    chunk = max(1, min(500, EVAL_VALUES // max(1, x.shape[1])))
    correct = 0
    for s in range(0, len(x), chunk):
        xs = x[s:s + chunk]
        logits = trainer.logits(xs, initial_state(noise, len(xs), hidden, rng))
        correct += int((logits.argmax(1) == y[s:s + chunk]).sum())
    return correct / max(1, len(x))


def train_lstm(ctx: RunContext, cfg: dict, batches: np.random.SeedSequence) -> dict:
    """Train one LSTM as ``cfg`` says on ``ctx.engine`` (and ``ctx.device``); returns its
    curve and test accuracy.

    ``cfg``: norm, hidden, steps, batch, lr, clip, eval_every, h0_noise, and optionally
    ``optimizer`` ("sgd"), ``pixels`` (False) and ``val_limit`` (None: the curve is evaluated
    on that many validation images, a fixed stratified sample). Weights come from
    ``ctx.rng("init")`` (the same for every norm and engine), batches from ``batches``.
    """
    pixels = cfg.get("pixels", False)
    p = parts(ctx.data)
    x, y = sequences(p.train.x, pixels), p.train.y
    limit = cfg.get("val_limit") or len(p.val)
    x_val, y_val = sequences(p.val.x[:limit], pixels), p.val.y[:limit]
    x_test = sequences(p.test.x, pixels)
    if ctx.workers > 1 and ctx.warn:
        ctx.warn(f"{ctx.experiment}/{ctx.key}: the LSTM trains in one process; --workers "
                 f"{ctx.workers} ignored here")
    trainer = ctx.owned(make_lstm_trainer(ctx.engine, x.shape[2], x.shape[1],
                                          ctx.data.n_classes, cfg, ctx.rng("init"),
                                          device=ctx.device))
    hidden, noise = cfg["hidden"], cfg.get("h0_noise", 0.0)
    noise_rng = ctx.rng("h0", cfg["norm"])
    hist, start = {"step": [], "val_acc": [], "train_loss": []}, 0
    resumed = ctx.load_partial()
    if resumed is not None:
        meta, arrays = resumed
        trainer.load_state(arrays)
        hist, start = meta["hist"], meta["step"]
        noise_rng.bit_generator.state = meta["noise_rng"]
    losses = []
    for step in range(start, cfg["steps"]):
        idx = epoch_batch(batches, len(x), cfg["batch"], step)
        losses.append(trainer.train_step(x[idx], y[idx],
                                         initial_state(noise, len(idx), hidden, noise_rng)))
        done = step + 1
        if done % cfg["eval_every"] == 0 or done == cfg["steps"]:
            hist["step"].append(done)
            # the same eval-time h_0 noise at every evaluation: curves are not jittered by it
            hist["val_acc"].append(accuracy(trainer, x_val, y_val, hidden, noise,
                                            ctx.rng("h0-test", cfg["norm"])))
            hist["train_loss"].append(float(np.mean(losses)))
            losses = []
            if done < cfg["steps"]:
                ctx.save_partial({"hist": hist, "step": done,
                                  "noise_rng": noise_rng.bit_generator.state}, trainer.state())
            ctx.report(done, cfg["steps"])
    test_acc = accuracy(trainer, x_test, p.test.y, hidden, noise,
                        ctx.rng("h0-test", cfg["norm"]))
    return {**hist, "engine": trainer.engine, "final_acc": float(np.mean(hist["val_acc"][-2:])),
            "test_acc": test_acc}
