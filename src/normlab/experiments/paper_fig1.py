"""Ioffe & Szegedy 2015, sec. 4.1 and Fig. 1: BN on a sigmoid MLP.

Setup (the paper's): a 784-100-100-100-10 fully connected net with sigmoid nonlinearities,
mini-batches of 60, 50,000 training steps, weights from a small Gaussian, BN (when on) inserted
before each sigmoid. The paper gives no optimizer settings; we use plain SGD at lr 0.5 for both
nets and N(0, 0.01^2) weights with zero biases -- "small" meaning pre-activations start at about
+-0.1, in the sigmoid's linear region, so the plain net has to grow its weights (and shift the
sigmoid inputs) to learn.
"""

from __future__ import annotations

import numpy as np

from ..data import Dataset
from ..engines.spec import last_index, mlp_spec
from ..runner.base import Experiment, Metrics, Run, RunContext, derive_seed
from ..runner.curve import final_accuracy, speedup, steps_to
from ..runner.design import DesignChange
from ..runner.evidence import Criterion, Published
from ..runner.holdout import parts
from ..runner.plots import BAND_NOTE, band, seeds_of
from ..runner.steps import Steps
from ..runner.testnoise import record
from ..runner.train import epoch_batch, evaluate, evaluate_correct

STEPS = Steps(50_000, minimum=100)
BATCH = 60
LR = 0.5
INIT_STD = 0.01
HIDDEN = (100, 100, 100)
N_EVALS = 50          # evaluation points over training (every 1,000 steps at full size)
EARLY = 20            # ... plus step 0 and 19 points inside the first interval (every 50 steps)
N_CHECKPOINTS = 10    # mid-run checkpoints per run
PERCENTILES = (15, 50, 85)
TARGET_FRACTION = 0.95  # the common accuracy level: 95% of BN's final validation accuracy

SPEEDUP = "steps to the target, no BN / BN"
FINAL_GAIN = "final test accuracy, BN - no BN"
DRIFT = "sigmoid-input drift, no BN / BN"
PAPER_SETUP = ("MNIST (60,000 train), 784-100-100-100-10 sigmoid MLP, batch 60, 50,000 steps, "
               "BN before each sigmoid")


def eval_points(steps: int, every: int, early: int) -> set[int]:
    """Step 0, every ``every`` steps and the last, and ``early`` points inside the first
    interval (so the faster net's step count is not floored at ``every``)."""
    first = {round(every * j / early) for j in range(1, early)} if every >= 2 * early else set()
    return {0, steps} | set(range(every, steps + 1, every)) | first


class PaperFig1(Experiment):
    name = "paper-fig1"
    title = "BN stabilises sigmoid inputs and speeds up training (BN paper, Fig. 1)"
    source = ("Ioffe & Szegedy 2015, Batch Normalization: Accelerating Deep Network Training by "
              "Reducing Internal Covariate Shift, sec. 4.1 and Fig. 1(a-c)")
    claim = ("With BN the network reaches higher test accuracy sooner (Fig. 1a), and the "
             "distribution of a last-hidden-layer sigmoid's input stays stable over training "
             "(15/50/85th percentiles, Fig. 1c) while without BN it drifts (Fig. 1b).")
    quick_scale = 0.1
    same_at_paper = ("it already is the paper's setting (Fig. 1: the 784-100-100-100-10 sigmoid "
                     "MLP, 50,000 steps of 60 images); paper size only means running it on the "
                     "full data set given with --data.")
    criteria = (
        Criterion("(a) BN reaches the target sooner", SPEEDUP, 1.5, log=True),
        Criterion("(a) BN ends with the higher test accuracy", FINAL_GAIN, 0.0),
        Criterion("(b, c) the sigmoid inputs drift less with BN", DRIFT, 2.0, log=True),
    )
    published = (
        Published("Ioffe & Szegedy 2015", "Fig. 1(a), sec. 4.1",
                  "test accuracy over training, with vs without BN",
                  "the BN net is higher throughout and gets there faster (a plot; the text "
                  "gives no number)", PAPER_SETUP, FINAL_GAIN, qualitative=True),
        Published("Ioffe & Szegedy 2015", "Fig. 1(b, c)",
                  "15/50/85th percentiles of a last-hidden-layer sigmoid's input",
                  "drift over training without BN, stay put with BN (a plot)", PAPER_SETUP,
                  DRIFT, qualitative=True),
    )
    definitions = (f"Target = {TARGET_FRACTION} x BN's final validation accuracy (mean of the "
                   f"last 10% of the regular evaluations), per seed; steps to it are "
                   f"interpolated between evaluations, and a net that never reaches it is "
                   f"censored (it needs more than the budget). Drift = per last-hidden-layer "
                   f"unit, the largest range over "
                   f"training of its 15/50/85th input percentiles (validation set, eval mode, "
                   f"at the regular evaluations); "
                   f"the ratio is the median over units. Final test accuracy: the test set, "
                   f"once, after the last step.")
    resolution = (f"Validation accuracy at step 0, every {STEPS.full // N_EVALS // EARLY} steps "
                  f"up to step {STEPS.full // N_EVALS} and every {STEPS.full // N_EVALS} after "
                  f"that (full size), so BN's steps to the target are read to within "
                  f"{STEPS.full // N_EVALS // EARLY} steps.")
    pilot_seeds = ("seed 0 (mnist5k and Fashion-MNIST, full size, 2026-11-24: the one-seed "
                   "version); seeds 0-4 (2026-11-28/29)")
    design_changes = (
        DesignChange("fixed thresholds on one seed (speed-up >= 1.5, BN's final accuracy not "
                     "more than 0.5 points lower, drift >= 2) became intervals over seeds; the "
                     "final-accuracy part became 'BN ends higher' (>= 0); the target moved from "
                     "95% of BN's final test accuracy to its final validation accuracy",
                     "2026-11-28, be3efed, after the one-seed verdicts (mnist5k holds, "
                     "Fashion-MNIST inconclusive)",
                     "evidence round 1 (issue 15): verdicts over seeds, the test set read once"),
        DesignChange("evaluation at step 0 and every 50 steps up to step 1,000; a net that "
                     "never reaches the target is censored instead of counting as 2x the budget",
                     "2026-12-07, issue 24, after seeds 0-4 (7.07x on mnist5k)",
                     "without a step-0 point BN's step count was floored at the first "
                     "evaluation (1,000 steps), so 7.07x read 'plain steps / 1,000'"),
    )

    def setup(self, data: Dataset, scale: float, size: str = "full") -> str:
        steps = STEPS.at(scale)
        sizes = "-".join(map(str, (data.n_features, *HIDDEN, data.n_classes)))
        p = parts(data)
        return (f"{sizes} sigmoid MLP on {data.describe()} ({len(p.train)} train / "
                f"{len(p.val)} validation); with and without BatchNorm1d before each sigmoid; "
                f"plain SGD lr {LR} (no momentum, no weight decay), batch {BATCH} (shuffled "
                f"epochs), {steps:,} steps (paper: {STEPS.full:,}); Linear weights N(0, "
                f"{INIT_STD}^2), biases 0; at each seed both nets start from identical weights "
                f"and see identical batches. Validation accuracy and the {PERCENTILES} "
                f"percentiles of the inputs to each sigmoid of the last hidden layer (eval "
                f"mode) at {N_EVALS} points; the figure shows unit 0.")

    def scale_note(self, data: Dataset, scale: float, size: str = "full") -> str:
        return (f"the paper's MLP, {STEPS.at(scale):,} steps of {BATCH}, "
                f"{len(parts(data).train):,} training images")

    def runs(self, data: Dataset, scale: float, size: str = "full") -> list[Run]:
        steps = STEPS.at(scale)
        base = {"sizes": [data.n_features, *HIDDEN, data.n_classes], "steps": steps,
                "batch": BATCH, "lr": LR, "init_std": INIT_STD,
                "eval_every": max(1, steps // N_EVALS), "early": EARLY}
        return [Run("plain", {**base, "bn": False}, "without BN"),
                Run("bn", {**base, "bn": True}, "with BN")]

    def run(self, ctx: RunContext, cfg: dict) -> dict:
        spec = mlp_spec(cfg["sizes"], "sigmoid", cfg["bn"])
        tap = last_index(spec, "sigmoid")
        # Both runs share the "init" and "batches" streams: same weights, same batches.
        trainer = ctx.trainer(spec, cfg["init_std"], ctx.rng("init"), cfg["lr"])
        stream = derive_seed(ctx.seed, self.name, "batches")
        p = parts(ctx.data)
        (x_tr, y_tr), (x_va, y_va) = p.train.flat(), p.val.flat()
        steps, every = cfg["steps"], cfg["eval_every"]
        ckpt_every = max(every, (steps // N_CHECKPOINTS) // every * every)
        at = eval_points(steps, every, cfg.get("early", 1))
        hist = {"step": [], "val_acc": [], "train_loss": []}
        pct = np.zeros((0, len(PERCENTILES), cfg["sizes"][-2]))
        start, loss_sum = 0, 0.0
        resumed = ctx.load_partial()
        if resumed is not None:
            meta, arrays = resumed
            trainer.load_state(arrays)
            hist, start, pct = meta["hist"], meta["step"], arrays["percentiles"]

        def look(done, loss):
            nonlocal pct
            acc, z = evaluate(trainer, x_va, y_va, tap)
            hist["step"].append(done)
            hist["val_acc"].append(acc)
            hist["train_loss"].append(loss)
            p_now = np.percentile(z.astype(np.float64), PERCENTILES, axis=0)
            pct = np.concatenate([pct, p_now[None]])

        if start == 0 and 0 in at:
            look(0, None)
        for step in range(start, steps):
            idx = epoch_batch(stream, len(x_tr), cfg["batch"], step)
            loss_sum += trainer.train_step(x_tr[idx], y_tr[idx])
            done = step + 1
            if done in at:
                since = hist["step"][-1] if hist["step"] else 0
                look(done, loss_sum / (done - since))
                loss_sum = 0.0
                if done % ckpt_every == 0 and done < steps:
                    ctx.save_partial({"hist": hist, "step": done},
                                     {**trainer.state(), "percentiles": pct})
            if done % 50 == 0 or done == steps:
                ctx.report(done, steps)
        # How far each unit's percentiles travel over training: max over the three percentiles of
        # (max - min over time), in the sigmoid's own input units.
        regular = np.asarray([s > 0 and (s % every == 0 or s == steps) for s in hist["step"]])
        drift = (pct[regular].max(axis=0) - pct[regular].min(axis=0)).max(axis=0)
        out = {**hist}
        out["test_acc"] = record(out, "test_acc", evaluate_correct(trainer, *p.test.flat()))
        return {**out,
                "p15": pct[:, 0, 0].tolist(), "p50": pct[:, 1, 0].tolist(),
                "p85": pct[:, 2, 0].tolist(), "drift_per_unit": drift.tolist()}

    def statistics(self, runs: list[Run], metrics: Metrics) -> dict[str, float]:
        plain, bn = metrics["plain"], metrics["bn"]
        every = max(1, plain["step"][-1] // N_EVALS)
        regular = [a for s, a in zip(bn["step"], bn["val_acc"], strict=True)
                   if s > 0 and s % every == 0]
        tail = max(1, len(regular) // 10)
        target = TARGET_FRACTION * float(np.mean(regular[-tail:]))
        reach = {k: steps_to(m["step"], m["val_acc"], target) for k, m in metrics.items()}
        drift_p, drift_b = np.asarray(plain["drift_per_unit"]), np.asarray(bn["drift_per_unit"])
        return {
            SPEEDUP: speedup(reach["plain"], reach["bn"], plain["step"][-1]),
            FINAL_GAIN: bn["test_acc"] - plain["test_acc"],
            DRIFT: float(np.median(drift_p / np.maximum(drift_b, 1e-12))),
            "final test accuracy, BN": bn["test_acc"],
            "final test accuracy, no BN": plain["test_acc"],
            "final validation accuracy, BN": final_accuracy(bn["val_acc"]),
            "target validation accuracy": target,
        }

    def rows(self, runs: list[Run], metrics: Metrics) -> list[dict]:
        plain, bn = metrics["plain"], metrics["bn"]
        return [{"step": int(s), "val_acc_plain": plain["val_acc"][i],
                 "val_acc_bn": bn["val_acc"][i], "train_loss_plain": plain["train_loss"][i],
                 "train_loss_bn": bn["train_loss"][i],
                 **{f"p{q}_plain": plain[f"p{q}"][i] for q in PERCENTILES},
                 **{f"p{q}_bn": bn[f"p{q}"][i] for q in PERCENTILES}}
                for i, s in enumerate(plain["step"])]

    def figures(self, runs, by_seed, summary) -> dict:
        import matplotlib.pyplot as plt

        first = by_seed[min(by_seed)]
        steps = first["plain"]["step"]
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), layout="constrained")
        ax = axes[0]
        band(ax, steps, seeds_of(by_seed, "plain", "val_acc"), "--", "Without BN",
             color="tab:gray")
        band(ax, steps, seeds_of(by_seed, "bn", "val_acc"), "-", "With BN", color="tab:blue")
        ax.set(xlabel="training step", ylabel="validation accuracy", title="(a) accuracy")
        lo = min(min(m[k]["val_acc"]) for m in by_seed.values() for k in ("plain", "bn"))
        ax.set_ylim(max(0.0, lo - 0.02), 1.0)
        ax.legend(loc="center right")
        pcts = [v for m in by_seed.values() for k in ("plain", "bn") for q in PERCENTILES
                for v in m[k][f"p{q}"]]
        shared = (min(pcts), max(pcts))
        pad = 0.05 * (shared[1] - shared[0] + 1e-9)
        for ax, key, title in ((axes[1], "plain", "(b) without BN"),
                               (axes[2], "bn", "(c) with BN")):
            for q, style in zip(PERCENTILES, (":", "-", ":"), strict=True):
                band(ax, steps, seeds_of(by_seed, key, f"p{q}"), style, f"{q}th pct",
                     color="black")
            ax.set(xlabel="training step", ylabel="sigmoid input (unit 0)", title=title,
                   ylim=(shared[0] - pad, shared[1] + pad))
        axes[1].legend(loc="best", fontsize="small")
        fig.suptitle(BAND_NOTE, fontsize="small")
        return {"fig1": fig}
