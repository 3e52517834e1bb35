"""Ioffe & Szegedy 2015, sec. 4.1 and Fig. 1: BN on a sigmoid MLP.

Setup (the paper's): a 784-100-100-100-10 fully connected net with sigmoid nonlinearities,
mini-batches of 60, 50,000 training steps, weights from a small Gaussian, BN (when on) inserted
before each sigmoid. The paper gives no optimizer settings; we use plain SGD at lr 0.5 for both
nets (a public reproduction used the same and reached about 0.98 with BN vs 0.977 without) and
N(0, 0.01^2) weights with zero biases -- "small" meaning pre-activations start at about +-0.1, in
the sigmoid's linear region, so the plain net has to grow its weights (and shift the sigmoid
inputs) to learn.
"""

from __future__ import annotations

import numpy as np

from ..data import Dataset
from .base import Experiment, Run, RunContext, Summary, derive_seed, scaled
from .models import last_index, mlp_spec
from .train import epoch_batch, evaluate, make_trainer

STEPS = 50_000
BATCH = 60
LR = 0.5
INIT_STD = 0.01
HIDDEN = (100, 100, 100)
N_EVALS = 50          # evaluation points over training (every 1,000 steps at full size)
N_CHECKPOINTS = 10    # mid-run checkpoints per run
PERCENTILES = (15, 50, 85)

# Verdict rules (fixed before any run):
TARGET_FRACTION = 0.95  # the common accuracy level: 95% of BN's final accuracy
SPEEDUP_HOLDS = 1.5   # plain needs >= 1.5x the steps BN needs to reach it (or never does)
FINAL_SLACK = 0.005   # ... and BN's final accuracy is not more than 0.5 points lower
DRIFT_HOLDS = 2.0     # the plain net's sigmoid-input percentiles move >= 2x as far as BN's


class PaperFig1(Experiment):
    name = "paper-fig1"
    title = "BN stabilises sigmoid inputs and speeds up training (BN paper, Fig. 1)"
    source = ("Ioffe & Szegedy 2015, Batch Normalization: Accelerating Deep Network Training by "
              "Reducing Internal Covariate Shift, sec. 4.1 and Fig. 1(a-c)")
    claim = ("With BN the network reaches higher test accuracy sooner (Fig. 1a), and the "
             "distribution of a last-hidden-layer sigmoid's input stays stable over training "
             "(15/50/85th percentiles, Fig. 1c) while without BN it drifts (Fig. 1b).")
    quick_scale = 0.1

    def setup(self, data: Dataset, scale: float) -> str:
        steps = scaled(STEPS, scale, 100)
        sizes = "-".join(map(str, (data.n_features, *HIDDEN, data.n_classes)))
        return (f"{sizes} sigmoid MLP on {data.describe()}; with and without BatchNorm1d before "
                f"each sigmoid; plain SGD lr {LR} (no momentum, no weight decay), batch {BATCH} "
                f"(shuffled epochs), {steps:,} steps (paper: {STEPS:,}); Linear weights "
                f"N(0, {INIT_STD}^2), biases 0, both nets start from identical weights and see "
                f"identical batches. Test accuracy and the {PERCENTILES} percentiles of the "
                f"inputs to each sigmoid of the last hidden layer over the test set (eval mode) "
                f"at {N_EVALS} points; the figure shows unit 0.")

    def runs(self, data: Dataset, scale: float) -> list[Run]:
        steps = scaled(STEPS, scale, 100)
        base = {"sizes": [data.n_features, *HIDDEN, data.n_classes], "steps": steps,
                "batch": BATCH, "lr": LR, "init_std": INIT_STD,
                "eval_every": max(1, steps // N_EVALS)}
        return [Run("plain", {**base, "bn": False}, "without BN"),
                Run("bn", {**base, "bn": True}, "with BN")]

    def run(self, ctx: RunContext, cfg: dict) -> dict:
        spec = mlp_spec(cfg["sizes"], "sigmoid", cfg["bn"])
        tap = last_index(spec, "sigmoid")
        # Both runs share the "init" and "batches" streams: same weights, same batches.
        trainer = make_trainer(ctx.engine, spec, cfg["init_std"], ctx.rng("init"), cfg["lr"])
        stream = derive_seed(ctx.seed, self.name, "batches")
        x_tr, y_tr = ctx.data.flat("train")
        x_te, y_te = ctx.data.flat("test")
        steps, every = cfg["steps"], cfg["eval_every"]
        ckpt_every = max(every, (steps // N_CHECKPOINTS) // every * every)
        hist = {"step": [], "test_acc": [], "train_loss": []}
        pct = np.zeros((0, len(PERCENTILES), cfg["sizes"][-2]))
        start, loss_sum = 0, 0.0
        resumed = ctx.load_partial()
        if resumed is not None:
            meta, arrays = resumed
            trainer.load_state(arrays)
            hist, start, pct = meta["hist"], meta["step"], arrays["percentiles"]
        for step in range(start, steps):
            idx = epoch_batch(stream, len(x_tr), cfg["batch"], step)
            loss_sum += trainer.train_step(x_tr[idx], y_tr[idx])
            done = step + 1
            if done % every == 0 or done == steps:
                acc, z = evaluate(trainer, x_te, y_te, tap)
                hist["step"].append(done)
                hist["test_acc"].append(acc)
                hist["train_loss"].append(loss_sum / (done - (hist["step"][-2]
                                                              if len(hist["step"]) > 1 else 0)))
                loss_sum = 0.0
                p = np.percentile(z.astype(np.float64), PERCENTILES, axis=0)
                pct = np.concatenate([pct, p[None]])
                if done % ckpt_every == 0 and done < steps:
                    ctx.save_partial({"hist": hist, "step": done},
                                     {**trainer.state(), "percentiles": pct})
            if done % 50 == 0 or done == steps:
                ctx.report(done, steps)
        # How far each unit's percentiles travel over training: max over the three percentiles of
        # (max - min over time), in the sigmoid's own input units.
        drift = (pct.max(axis=0) - pct.min(axis=0)).max(axis=0)
        return {**hist, "p15": pct[:, 0, 0].tolist(), "p50": pct[:, 1, 0].tolist(),
                "p85": pct[:, 2, 0].tolist(), "drift_per_unit": drift.tolist()}

    def summarize(self, runs: list[Run], metrics: dict[str, dict]) -> Summary:
        plain, bn = metrics["plain"], metrics["bn"]
        steps = np.asarray(plain["step"])
        acc_p, acc_b = np.asarray(plain["test_acc"]), np.asarray(bn["test_acc"])
        tail = max(1, len(steps) // 10)
        final_p, final_b = float(acc_p[-tail:].mean()), float(acc_b[-tail:].mean())
        # "Sooner": BN reaches 95% of its own final accuracy at step reach_b; when (if ever)
        # does the plain net reach that same accuracy?
        target = TARGET_FRACTION * final_b
        reach_b = int(steps[np.argmax(acc_b >= target)])
        reached = acc_p >= target
        reach_p = int(steps[np.argmax(reached)]) if reached.any() else None
        speedup = reach_p / reach_b if reach_p is not None else float("inf")
        tenth = max(0, len(steps) // 10 - 1)
        drift_p, drift_b = np.asarray(plain["drift_per_unit"]), np.asarray(bn["drift_per_unit"])
        drift_ratio = float(np.median(drift_p / np.maximum(drift_b, 1e-12)))
        a = ("holds" if speedup >= SPEEDUP_HOLDS and final_b >= final_p - FINAL_SLACK else
             "does not hold" if speedup < 1.0 or final_b < final_p - 2 * FINAL_SLACK else
             "inconclusive")
        b = ("holds" if drift_ratio >= DRIFT_HOLDS else
             "does not hold" if drift_ratio <= 1.0 else "inconclusive")
        verdict = (a if a == b else "does not hold" if "does not hold" in (a, b)
                   else "inconclusive")
        measured = {
            "final test accuracy, no BN (mean of last 10% of evals)": round(final_p, 4),
            "final test accuracy, BN": round(final_b, 4),
            f"test accuracy at step {int(steps[tenth]):,}, no BN": round(float(acc_p[tenth]), 4),
            f"test accuracy at step {int(steps[tenth]):,}, BN": round(float(acc_b[tenth]), 4),
            "target accuracy (95% of BN's final)": round(target, 4),
            "steps to target, no BN": reach_p if reach_p is not None else "not reached",
            "steps to target, BN": reach_b,
            "speed-up (steps no BN / steps BN)": round(speedup, 2) if reach_p else "> budget",
            "median sigmoid-input drift, no BN": round(float(np.median(drift_p)), 3),
            "median sigmoid-input drift, BN": round(float(np.median(drift_b)), 3),
            "drift ratio (median over units of no BN / BN)": round(drift_ratio, 2),
            "reference: public reproduction (MNIST, 50k steps)": "BN ~0.98 vs ~0.977 without",
        }
        sooner = f"{speedup:.2f}x" if reach_p is not None else "plain net never reaches it"
        reason = (f"accuracy: speed-up to {target:.3f} {sooner}, final {final_b:.4f} (BN) vs "
                  f"{final_p:.4f} -> {a}; sigmoid inputs: drift ratio {drift_ratio:.2f} -> {b}")
        thresholds = (f"(a) target = {TARGET_FRACTION} x BN's final accuracy; holds if the plain "
                      f"net needs >= {SPEEDUP_HOLDS}x BN's steps to reach it (or never does) "
                      f"and BN's final accuracy is >= plain - {FINAL_SLACK}; "
                      f"does not hold if the speed-up < 1 or BN's final accuracy < plain - "
                      f"{2 * FINAL_SLACK}. (b,c) holds if the median over last-hidden-layer units "
                      f"of (percentile drift without BN) / (with BN) >= {DRIFT_HOLDS}, does not "
                      f"hold if <= 1. Overall: both hold -> holds; either fails -> does not hold; "
                      f"otherwise inconclusive.")
        rows = [{"step": int(s), "test_acc_plain": acc_p[i], "test_acc_bn": acc_b[i],
                 "train_loss_plain": plain["train_loss"][i], "train_loss_bn": bn["train_loss"][i],
                 **{f"p{q}_plain": plain[f"p{q}"][i] for q in PERCENTILES},
                 **{f"p{q}_bn": bn[f"p{q}"][i] for q in PERCENTILES}}
                for i, s in enumerate(steps)]
        return Summary(measured, verdict, reason, thresholds, rows)

    def figures(self, runs: list[Run], metrics: dict[str, dict], summary: Summary) -> dict:
        import matplotlib.pyplot as plt

        plain, bn = metrics["plain"], metrics["bn"]
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), layout="constrained")
        ax = axes[0]
        ax.plot(plain["step"], plain["test_acc"], "--", color="tab:gray", label="Without BN")
        ax.plot(bn["step"], bn["test_acc"], color="tab:blue", label="With BN")
        ax.set(xlabel="training step", ylabel="test accuracy", title="(a) test accuracy")
        lo = min(min(plain["test_acc"]), min(bn["test_acc"]))
        ax.set_ylim(max(0.0, lo - 0.02), 1.0)
        ax.legend(loc="center right")
        shared = [min(min(m["p15"]) for m in (plain, bn)), max(max(m["p85"]) for m in (plain, bn))]
        for ax, m, title in ((axes[1], plain, "(b) without BN"), (axes[2], bn, "(c) with BN")):
            for q, style in zip(PERCENTILES, (":", "-", ":"), strict=True):
                ax.plot(m["step"], m[f"p{q}"], style, color="black", label=f"{q}th pct")
            ax.set(xlabel="training step", ylabel="sigmoid input (unit 0)", title=title)
            pad = 0.05 * (shared[1] - shared[0] + 1e-9)
            ax.set_ylim(shared[0] - pad, shared[1] + pad)
        axes[1].legend(loc="best", fontsize="small")
        return {"fig1": fig}
