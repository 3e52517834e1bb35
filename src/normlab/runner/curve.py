"""One resumable training run that records a validation-accuracy curve, and what is read off it.

Shared by the experiments that train a classifier and watch it learn: shuffled-epoch
mini-batches, an optional learning-rate schedule, evaluation on the validation part at fixed
steps (step 0 included, so the first rise is seen), mid-run checkpoints, one test evaluation at
the end, and a stop at the first non-finite loss (a diverged run keeps the accuracy of its NaN
weights for the remaining evaluation points, so every curve has the same steps).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .base import RunContext
from .train import epoch_batch, evaluate

N_CHECKPOINTS = 5


def eval_steps(steps: int, n_evals: int) -> list[int]:
    """Step 0 and ``n_evals`` evenly spaced steps ending at ``steps``; tiny (CI-size) runs get one
    evaluation per 5 steps at most, so evaluating does not dominate them."""
    n_evals = max(2, min(n_evals, steps // 5))
    return sorted({0} | {max(1, round(steps * (i + 1) / n_evals)) for i in range(n_evals)})


def train_curve(ctx: RunContext, trainer, train: tuple[np.ndarray, np.ndarray],
                val: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], *,
                steps: int, batch: int, evals: list[int], stream: np.random.SeedSequence,
                lr_at: Callable[[int], float] | None = None) -> dict:
    """Train ``steps`` SGD steps; returns {step, val_acc, train_loss, diverged_at, test_acc}.

    ``lr_at(step)`` (optional) sets the learning rate of each step; ``test_acc`` is measured
    once, after the last step.
    """
    (x, y), (x_va, y_va) = train, val
    hist = {"step": [], "val_acc": [], "train_loss": []}
    start, diverged = 0, None
    at = set(evals)
    every = max(1, len(evals) // N_CHECKPOINTS)
    ckpt = set(evals[every - 1::every])
    resumed = ctx.load_partial()
    if resumed is not None:
        meta, arrays = resumed
        trainer.load_state(arrays)
        hist, start = meta["hist"], meta["step"]
    elif 0 in at:
        _record(hist, 0, evaluate(trainer, x_va, y_va)[0], None)
    loss_sum, n_loss = 0.0, 0
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for step in range(start, steps):
            if lr_at is not None:
                trainer.set_lr(lr_at(step))
            idx = epoch_batch(stream, len(x), batch, step)
            loss = trainer.train_step(x[idx], y[idx])
            done = step + 1
            if not np.isfinite(loss):
                diverged = done
                break
            loss_sum, n_loss = loss_sum + loss, n_loss + 1
            if done in at:
                _record(hist, done, evaluate(trainer, x_va, y_va)[0], loss_sum / max(n_loss, 1))
                loss_sum, n_loss = 0.0, 0
                if done in ckpt and done < steps:
                    ctx.save_partial({"hist": hist, "step": done}, trainer.state())
            if done % 50 == 0 or done == steps:
                ctx.report(done, steps)
        if diverged is not None:
            acc = evaluate(trainer, x_va, y_va)[0]
            for s in evals[len(hist["step"]):]:
                _record(hist, s, acc, None)
            ctx.report(steps, steps)
        test_acc = evaluate(trainer, *test)[0]
    return {**hist, "diverged_at": diverged, "test_acc": test_acc}


def _record(hist: dict, step: int, acc: float, loss: float | None) -> None:
    hist["step"].append(step)
    hist["val_acc"].append(acc)
    hist["train_loss"].append(loss)


def steps_to(steps: list[int], acc: list[float], target: float) -> float | None:
    """Steps until the curve first reaches ``target``, linearly interpolated between the two
    evaluations that bracket the crossing (None: never reached).

    Interpolating keeps a ratio of step counts from moving in whole evaluation intervals: with
    20 evaluations, "first evaluation at or above" can only say 5 or 7 intervals, never 6.2.
    """
    prev_s, prev_a = None, None
    for s, a in zip(steps, acc, strict=True):
        if a is not None and a >= target:
            if prev_s is None or prev_a is None or a == prev_a:
                return float(s)
            return float(prev_s + (target - prev_a) / (a - prev_a) * (s - prev_s))
        prev_s, prev_a = s, a
    return None


def final_accuracy(acc: list[float]) -> float:
    """Mean of the last fifth of an accuracy curve: one late evaluation is too noisy."""
    tail = max(1, len(acc) // 5)
    return float(np.mean(acc[-tail:]))


def speedup(steps_slow: float | None, steps_fast: float | None, budget: int) -> float:
    """How many times fewer steps the second run needs to reach a level than the first.

    A run that never reaches the level within ``budget`` steps counts as needing 2 x budget:
    a conservative bound that keeps the ratio finite (and positive) for a log-scale interval.
    """
    censored = 2.0 * budget
    slow = censored if steps_slow is None else max(steps_slow, 1.0)
    fast = censored if steps_fast is None else max(steps_fast, 1.0)
    return slow / fast
