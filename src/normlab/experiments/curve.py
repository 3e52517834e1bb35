"""One resumable training run that records a test-accuracy curve (shared by the CNN/LR
experiments): shuffled-epoch mini-batches, evaluation at fixed steps, mid-run checkpoints, and a
stop at the first non-finite loss (a diverged run keeps the accuracy of its NaN weights for the
remaining evaluation points, so every curve has the same steps).
"""

from __future__ import annotations

import numpy as np

from .base import RunContext
from .train import epoch_batch, evaluate

N_CHECKPOINTS = 5


def eval_steps(steps: int, n_evals: int) -> list[int]:
    """``n_evals`` evenly spaced steps ending at ``steps``; tiny (CI-size) runs get one
    evaluation per 5 steps at most, so evaluating does not dominate them."""
    n_evals = max(2, min(n_evals, steps // 5))
    return sorted({max(1, round(steps * (i + 1) / n_evals)) for i in range(n_evals)})


def train_curve(ctx: RunContext, trainer, train: tuple[np.ndarray, np.ndarray],
                test: tuple[np.ndarray, np.ndarray], *, steps: int, batch: int,
                evals: list[int], stream: np.random.SeedSequence) -> dict:
    """Train ``steps`` SGD steps; returns {step, test_acc, train_loss, diverged_at}."""
    (x, y), (x_te, y_te) = train, test
    hist = {"step": [], "test_acc": [], "train_loss": []}
    start, diverged = 0, None
    at = set(evals)
    ckpt = set(evals[max(1, len(evals) // N_CHECKPOINTS) - 1::max(1, len(evals) // N_CHECKPOINTS)])
    resumed = ctx.load_partial()
    if resumed is not None:
        meta, arrays = resumed
        trainer.load_state(arrays)
        hist, start = meta["hist"], meta["step"]
    loss_sum, n_loss = 0.0, 0
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for step in range(start, steps):
            idx = epoch_batch(stream, len(x), batch, step)
            loss = trainer.train_step(x[idx], y[idx])
            done = step + 1
            if not np.isfinite(loss):
                diverged = done
                break
            loss_sum, n_loss = loss_sum + loss, n_loss + 1
            if done in at:
                hist["step"].append(done)
                hist["test_acc"].append(evaluate(trainer, x_te, y_te)[0])
                hist["train_loss"].append(loss_sum / max(n_loss, 1))
                loss_sum, n_loss = 0.0, 0
                if done in ckpt and done < steps:
                    ctx.save_partial({"hist": hist, "step": done}, trainer.state())
            if done % 50 == 0 or done == steps:
                ctx.report(done, steps)
        if diverged is not None:
            acc = evaluate(trainer, x_te, y_te)[0]
            for s in evals[len(hist["step"]):]:
                hist["step"].append(s)
                hist["test_acc"].append(acc)
                hist["train_loss"].append(None)
            ctx.report(steps, steps)
    return {**hist, "diverged_at": diverged}


def steps_to(steps: list[int], acc: list[float], target: float) -> int | None:
    """First evaluated step whose test accuracy reaches ``target`` (None: never)."""
    for s, a in zip(steps, acc, strict=True):
        if a >= target:
            return int(s)
    return None


def final_accuracy(acc: list[float]) -> float:
    """Mean of the last fifth of an accuracy curve: one late evaluation is too noisy."""
    tail = max(1, len(acc) // 5)
    return float(np.mean(acc[-tail:]))
