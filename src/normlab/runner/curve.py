"""One resumable training run that records a validation-accuracy curve, and what is read off it.

Shared by the experiments that train a classifier and watch it learn: shuffled-epoch
mini-batches, an optional learning-rate schedule, evaluation on the validation part at fixed
steps (step 0 included, and ten times as often over the first evaluation interval, so the
fastest net's step count is not floored by the grid: :func:`eval_steps`), mid-run checkpoints,
one test evaluation at the end (with the per-example correctness kept for the test-set bootstrap
of :mod:`.testnoise`), and a stop at the first non-finite loss (a diverged run keeps the
accuracy of its NaN weights for the remaining evaluation points, so every curve has the same
steps).

A run that never reaches a target within its budget is *censored*: its step count is only known
to exceed the budget, and :func:`speedup` returns the range of the ratio
(:class:`normlab.runner.evidence.Bound`) instead of inventing a number for it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .base import RunContext
from .evidence import Bound
from .testnoise import record
from .train import epoch_batch, evaluate, evaluate_correct

N_CHECKPOINTS = 5
EARLY = 10     # the first evaluation interval is split this many times


def eval_steps(steps: int, n_evals: int, early: int = EARLY) -> list[int]:
    """Step 0, ``n_evals`` evenly spaced steps ending at ``steps``, and ``early`` evenly spaced
    steps inside the first interval (so a net that learns within it is not floored at its end);
    tiny (CI-size) runs get one evaluation per 5 steps at most."""
    n_evals = max(2, min(n_evals, steps // 5))
    regular = {max(1, round(steps * (i + 1) / n_evals)) for i in range(n_evals)}
    first = min(regular)
    dense = {round(first * j / early) for j in range(1, early)} if first >= 2 * early else set()
    return sorted({0} | regular | dense)


def resolution_text(steps: int, n_evals: int, early: int = EARLY) -> str:
    """The evaluation grid of :func:`eval_steps` in words, for the report."""
    grid = eval_steps(steps, n_evals, early)
    regular = grid[-1] - grid[-2]
    first = [g for g in grid if g > 0][0]
    return (f"Validation accuracy at step 0, every {first} steps up to step {regular} and "
            f"every {regular} steps after that (full size), so steps to a target are read to "
            f"within {first} steps early on.")


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
        correct = evaluate_correct(trainer, *test)
    out = {**hist, "diverged_at": diverged}
    out["test_acc"] = record(out, "test_acc", correct)
    return out


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


def speedup(steps_slow: float | None, steps_fast: float | None,
            budget: int) -> float | Bound:
    """How many times fewer steps the second run needs to reach a level than the first.

    A run that never reaches the level within ``budget`` steps is censored: it needs more than
    ``budget`` steps, how many more is unknown. The ratio is then a :class:`Bound` -- slow
    censored: [budget / fast, inf); fast censored: [0, slow / budget]; both: [0, inf) -- and the
    interval treats it as such (never a fixed multiple of the budget). A step count below 1
    (the target met at step 0) counts as 1.
    """
    slow = None if steps_slow is None else max(steps_slow, 1.0)
    fast = None if steps_fast is None else max(steps_fast, 1.0)
    if slow is not None and fast is not None:
        return slow / fast
    lo = 0.0 if fast is None else budget / fast
    hi = float("inf") if slow is None else slow / budget
    return Bound(lo, max(lo, hi))
