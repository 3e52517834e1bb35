"""One resumable LSTM classification run for ``rnn-norm`` (NumPy engine).

An image is read as a sequence: row by row (T = H steps of W pixels) or, as in Cooijmans et al.
2016 sec. 5.1, pixel by pixel (T = H*W steps of one pixel: 784 for MNIST). A single-layer LSTM
reads it and a Linear head classifies its last hidden state; every step clips the global
gradient norm (Cooijmans: "gradient clipping at 1") before the optimizer (plain SGD, or
RMSProp as in their sec. 5.1). Each evaluation point also checkpoints the run (weights, running
statistics, optimizer state, the h_0 noise generator), so a killed run resumes exactly.
"""

from __future__ import annotations

import numpy as np

from .. import nn, optim
from .base import RunContext
from .holdout import parts
from .train import epoch_batch

EVAL_VALUES = 100_000   # eval chunks hold at most this many (sample, step) pairs: T=784 -> 127
OPTIMIZERS = ("sgd", "rmsprop")


def sequences(x: np.ndarray, pixels: bool) -> np.ndarray:
    """(N, H, W) images as (N, T, I): H rows of W pixels, or (``pixels``) H*W single pixels."""
    return x.reshape(len(x), -1, 1) if pixels else x


def make_optimizer(name: str, params: list, lr: float) -> optim.Optimizer:
    """Plain SGD, or RMSProp with torch's alpha 0.99 and eps 1e-8 (Cooijmans et al. state only
    the learning rate)."""
    if name == "sgd":
        return optim.SGD(params, lr=lr)
    if name == "rmsprop":
        return optim.RMSprop(params, lr=lr)
    raise ValueError(f"optimizer: expected one of {OPTIMIZERS}, got {name!r}")


def initial_state(noise: float, n: int, hidden: int, rng: np.random.Generator):
    """(h_0, c_0) with h_0 ~ N(0, noise^2) and c_0 = 0, or None (zeros) when ``noise`` is 0."""
    if not noise:
        return None
    return (rng.normal(0.0, noise, (n, hidden)).astype(np.float32),
            np.zeros((n, hidden), dtype=np.float32))


def clip_grad_norm(params, max_norm: float) -> float:
    """Scale all gradients so their global L2 norm is at most ``max_norm``; returns the norm."""
    norm = float(np.sqrt(sum(float(np.vdot(p.grad, p.grad)) for p in params
                             if p.grad is not None)))
    if norm > max_norm:
        for p in params:
            if p.grad is not None:
                p.grad *= max_norm / norm
    return norm


def accuracy(lstm, head, x: np.ndarray, y: np.ndarray, noise: float = 0.0,
             rng: np.random.Generator | None = None) -> float:
    """Eval-mode accuracy over (N, T, I) sequences ``x``, in chunks that bound memory."""
    lstm.eval()
    head.eval()
    chunk = max(1, min(500, EVAL_VALUES // max(1, x.shape[1])))
    correct = 0
    for s in range(0, len(x), chunk):
        out, _ = lstm(x[s:s + chunk], initial_state(noise, len(x[s:s + chunk]),
                                                    lstm.hidden_size, rng))
        correct += int((head(out[:, -1]).argmax(1) == y[s:s + chunk]).sum())
    return correct / max(1, len(x))


def _state(lstm, head, opt) -> dict[str, np.ndarray]:
    return {**{f"lstm.{k}": v for k, v in lstm.state_dict().items()},
            **{f"head.{k}": v for k, v in head.state_dict().items()},
            **{f"optim.{k}": v for k, v in opt.state_dict().items()}}


def _load(arrays: dict, lstm, head, opt) -> None:
    def part(prefix):
        return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}

    lstm.load_state_dict(part("lstm."))
    head.load_state_dict(part("head."))
    opt.load_state_dict(part("optim."))


def train_lstm(ctx: RunContext, cfg: dict, batches: np.random.SeedSequence) -> dict:
    """Train one LSTM as ``cfg`` says; returns its curve and test accuracy.

    ``cfg``: norm, hidden, steps, batch, lr, clip, eval_every, h0_noise, and optionally
    ``optimizer`` ("sgd"), ``pixels`` (False) and ``val_limit`` (None: the curve is evaluated
    on that many validation images, a fixed stratified sample). Weights come from
    ``ctx.rng("init")`` (the same for every norm), batches from ``batches``.
    """
    pixels = cfg.get("pixels", False)
    p = parts(ctx.data)
    x, y = sequences(p.train.x, pixels), p.train.y
    limit = cfg.get("val_limit") or len(p.val)
    x_val, y_val = sequences(p.val.x[:limit], pixels), p.val.y[:limit]
    x_test = sequences(p.test.x, pixels)
    rng = ctx.rng("init")
    lstm = nn.LSTM(x.shape[2], cfg["hidden"], norm=cfg["norm"], rng=rng)
    head = nn.Linear(cfg["hidden"], ctx.data.n_classes, rng=rng)
    loss_fn = nn.CrossEntropyLoss()
    params = lstm.parameters() + head.parameters()
    opt = make_optimizer(cfg.get("optimizer", "sgd"), params, cfg["lr"])
    noise = cfg.get("h0_noise", 0.0)
    noise_rng = ctx.rng("h0", cfg["norm"])
    hist, start = {"step": [], "val_acc": [], "train_loss": []}, 0
    resumed = ctx.load_partial()
    if resumed is not None:
        meta, arrays = resumed
        _load(arrays, lstm, head, opt)
        hist, start = meta["hist"], meta["step"]
        noise_rng.bit_generator.state = meta["noise_rng"]
    losses = []
    for step in range(start, cfg["steps"]):
        idx = epoch_batch(batches, len(x), cfg["batch"], step)
        lstm.train()
        head.train()
        out, _ = lstm(x[idx], initial_state(noise, len(idx), cfg["hidden"], noise_rng))
        losses.append(loss_fn(head(out[:, -1]), y[idx]))
        d_out = np.zeros_like(out)
        d_out[:, -1] = head.backward(loss_fn.backward())   # the loss sees the last step
        lstm.backward_params(d_out)   # the images need no gradient
        if cfg.get("clip"):
            clip_grad_norm(params, cfg["clip"])
        opt.step()
        opt.zero_grad()
        done = step + 1
        if done % cfg["eval_every"] == 0 or done == cfg["steps"]:
            hist["step"].append(done)
            # the same eval-time h_0 noise at every evaluation: curves are not jittered by it
            hist["val_acc"].append(accuracy(lstm, head, x_val, y_val, noise,
                                            ctx.rng("h0-test", cfg["norm"])))
            hist["train_loss"].append(float(np.mean(losses)))
            losses = []
            if done < cfg["steps"]:
                ctx.save_partial({"hist": hist, "step": done,
                                  "noise_rng": noise_rng.bit_generator.state},
                                 _state(lstm, head, opt))
            ctx.report(done, cfg["steps"])
    test_acc = accuracy(lstm, head, x_test, p.test.y, noise, ctx.rng("h0-test", cfg["norm"]))
    return {**hist, "engine": "numpy", "final_acc": float(np.mean(hist["val_acc"][-2:])),
            "test_acc": test_acc}
