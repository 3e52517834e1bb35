"""train() vs eval(), running-average momentum, and stale statistics (BN paper sec. 3.1, Alg. 2).

BN normalises with the statistics of the current mini-batch in training and with running
estimates of the population statistics in inference (Ioffe & Szegedy 2015, sec. 3.1: "once the
network has been trained, we use the normalization x_hat = (x - E[x]) / sqrt(Var[x] + eps) using
the population, rather than mini-batch, statistics"). Three consequences are measured on one
trained MLP (Linear -> BN -> ReLU hidden layers):

(a) evaluating in training mode makes a prediction depend on the other examples in its batch and
    degrades at small batches (batch 1 is impossible: one value per channel has no variance);
    eval mode gives the same output for every batch size;
(b) the running-average momentum sets how many batches the estimates need before eval accuracy
    is right (about 1/momentum; ``momentum=None``, the cumulative average, is exact soonest);
(c) after the input distribution shifts, the running statistics are stale; re-estimating them
    (forward passes in training mode with ``momentum=None``, no weight change) restores accuracy;
(d) the same for a realistic, non-affine shift -- Gaussian pixel noise clipped to [0, 1], a
    common corruption (Schneider et al. 2020 re-estimate BN statistics on ImageNet-C) -- where
    recalibration cannot undo the shift exactly and may recover much or little.

Which parts are evidence: (a)'s largest-batch match and (d). The rest cannot fail by
construction and are demonstrations (:mod:`normlab.runner.evidence`): BatchNorm1d over 2 images
maps every unit to +-gamma; eval mode is a fixed function of each input; the number of batches a
moving average of momentum m needs is set by (1 - m)^k, so the two momentum ratios are arithmetic;
and x -> 0.5 x + 0.3 is affine, so the first BN layer's recalibrated statistics undo it exactly.
"""

from __future__ import annotations

import math

import numpy as np

from ..data import Dataset
from ..engines.spec import mlp_spec
from ..runner.base import Experiment, Metrics, Run, RunContext, derive_seed
from ..runner.batchnorm import recalibrate, train_mode_correct
from ..runner.design import DesignChange
from ..runner.evidence import Bound, Criterion, Published, ratio
from ..runner.holdout import parts
from ..runner.plots import BAND_NOTE, band, bars
from ..runner.steps import Steps
from ..runner.testnoise import record, unpacked
from ..runner.train import epoch_batch, evaluate, evaluate_correct

STEPS = Steps(2000, minimum=50)
BATCH = 60
LR = 0.1
HIDDEN = (100, 100, 100)
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
MOMENTA = (0.01, 0.1, 0.5, None)
REESTIMATE_BATCHES = Steps(400, minimum=40)   # (b): batches fed to a freshly reset estimator
CONTRAST, BRIGHTNESS = 0.5, 0.3    # (c): x -> CONTRAST * x + BRIGHTNESS
RECAL_BATCHES = (1, 5, 20, 100)    # (c): recalibration lengths
NOISE = 0.3                        # (d): x -> clip(x + N(0, NOISE^2), 0, 1), fresh noise per use
NOISE_RECAL = 100                  # (d): recalibration batches of noisy training images

CLOSE = 0.01              # (b) "right": within 1 point of the exact-statistics accuracy

SMALL_DROP = "(a) eval accuracy - training-mode accuracy, smallest batch"
LARGE_GAP = "(a) |eval accuracy - training-mode accuracy|, largest batch"
EVAL_DEPENDENCE = "(a) eval mode: max |logit difference|, one example vs the whole batch"
SLOW_MOMENTUM = "(b) batches needed, momentum 0.01 / momentum 0.1"
CUMULATIVE = "(b) batches needed, momentum 0.1 / cumulative (momentum=None)"
SHIFT_COST = "(c) clean accuracy - shifted accuracy with stale statistics"
RECAL_LEFT = "(c) clean accuracy - shifted accuracy after recalibration"
NOISE_COST = "(d) clean accuracy - noisy accuracy with the clean statistics"
NOISE_RECOVERED = "(d) share of the noise's accuracy loss recovered by recalibration"


def _log_grid(n: int) -> list[int]:
    """Batch counts 1..n, about 4 per factor of 10 (plus n)."""
    grid = np.unique(np.round(np.logspace(0, np.log10(n), 4 * max(1, int(np.log10(n))) + 1)))
    return sorted({int(g) for g in grid} | {n})


class TrainEval(Experiment):
    name = "train-eval"
    title = "train() vs eval(): batch statistics, running-average momentum, stale statistics"
    source = ("Ioffe & Szegedy 2015, sec. 3.1 and Alg. 2 (population statistics for inference); "
              "PyTorch BatchNorm momentum semantics; the seeds' train()/eval() notes")
    claim = ("(a) In training mode a prediction depends on its batch and degrades at small "
             "batches (batch 1 is impossible), while a large batch matches eval mode; eval mode "
             "is batch-independent. (b) The smaller the running-average momentum, the more "
             "batches the running estimates need before eval accuracy is right; the cumulative "
             "average (momentum=None) is fastest. (c) After an input shift the running "
             "statistics are stale; recalibrating them (no weight change) restores accuracy. "
             "(d) Recalibrating on noisy images recovers a real share of what noise costs.")
    quick_scale = 0.25
    same_at_paper = ("its claims are about BN's train/eval semantics (Alg. 2), which the full "
                     "setting already shows at every batch size and momentum it tests.")
    criteria = (
        Criterion("(a) small batches degrade in training mode", SMALL_DROP, 0.05,
                  role="demonstration"),
        Criterion("(a) the largest batch matches eval mode", LARGE_GAP, 0.02, "<="),
        Criterion("(a) eval mode does not depend on the batch", EVAL_DEPENDENCE, 1e-3, "<=",
                  role="demonstration"),
        Criterion("(b) a smaller momentum needs more batches", SLOW_MOMENTUM, 2.0, log=True,
                  role="demonstration"),
        Criterion("(b) the cumulative average is at least as fast", CUMULATIVE, 1.0, log=True,
                  role="demonstration"),
        Criterion("(c) the affine shift makes the statistics stale", SHIFT_COST, 0.05,
                  role="demonstration"),
        Criterion("(c) recalibration undoes the affine shift", RECAL_LEFT, 0.01, "<=",
                  role="demonstration"),
        Criterion("(d) precondition: noise costs accuracy", NOISE_COST, 0.05,
                  precondition=True),
        Criterion("(d) recalibration recovers a quarter of it", NOISE_RECOVERED, 0.25),
    )
    published = (
        Published("Ioffe & Szegedy 2015", "sec. 3.1, Alg. 2",
                  "inference uses population statistics, so the output is a deterministic "
                  "function of the input", "qualitative (an algorithm)",
                  "Inception on ImageNet", EVAL_DEPENDENCE, qualitative=True),
        Published("PyTorch BatchNorm documentation", "momentum",
                  "running estimates: running = (1 - momentum) running + momentum batch; "
                  "momentum=None is a cumulative average", "qualitative (semantics)", "-",
                  SLOW_MOMENTUM, qualitative=True),
        Published("Schneider et al. 2020", "abstract, sec. 4",
                  "ImageNet-C mean corruption error, ResNet-50, BN statistics of the corrupted "
                  "images vs of the training set", "62.2% vs 76.7% mCE (14.5 points)",
                  "ResNet-50 on ImageNet-C (15 corruptions x 5 severities)", NOISE_RECOVERED,
                  comparable="ours is one corruption (Gaussian noise) on an MLP, as a share of "
                             "the loss recovered; theirs an error averaged over corruptions"),
    )
    definitions = (f"(a) on the test set, training mode normalises each batch with its own "
                   f"statistics (running statistics restored afterwards). (b) 'batches needed' "
                   f"= first count on a log grid at which eval accuracy is within {CLOSE} of the "
                   f"accuracy with exact statistics (a cumulative average over one epoch); a "
                   f"momentum that never gets there is censored (more than the grid's end). (c) "
                   f"the recalibration is the longest one ({RECAL_BATCHES[-1]} batches). (d) "
                   f"share recovered = "
                   f"(recalibrated noisy accuracy - noisy accuracy) / (clean accuracy - noisy "
                   f"accuracy), recalibrated on {NOISE_RECAL} noisy training batches.")
    pilot_seeds = ("seed 0 (mnist5k and Fashion-MNIST, full size, 2026-11-24); seeds 0-4 "
                   "(2026-11-28/29); part (d): seeds 100-101, mnist5k, full size (2026-12-07)")
    design_changes = (
        DesignChange("the rule became intervals over seeds with fixed bars (the parts unchanged)",
                     "2026-11-28, be3efed/88499b8, after the one-seed verdicts (holds on both "
                     "data sets)", "evidence round 1 (issue 15): verdicts over seeds"),
        DesignChange("(a) batch-2 drop, eval determinism, (b) both momentum ratios and (c) the "
                     "affine shift became demonstrations; (d) Gaussian noise sigma 0.3 with "
                     "recalibration (evidence) added; training-mode accuracy now covers the "
                     "remainder batch too",
                     "2026-12-07, issue 24, after seeds 0-4 read 'holds' on both data sets",
                     "the old parts cannot fail by construction, so 'holds' proved nothing. "
                     "Noise pilot, seeds 100-101, mnist5k, full size: sigma 0.3 cost 22/16 "
                     "points and recalibration recovered 53%/40% of it; sigma 0.5 cost 50/43 "
                     "points and recovered 35%/19%; sigma 0.3 (a moderate corruption) was "
                     "chosen, with the bar of 25% fixed before the pilot"),
    )

    def setup(self, data: Dataset, scale: float, size: str = "full") -> str:
        steps = STEPS.at(scale)
        sizes = "-".join(map(str, (data.n_features, *HIDDEN, data.n_classes)))
        return (f"One {sizes} MLP with Linear -> BatchNorm1d (momentum 0.1) -> ReLU hidden "
                f"layers on {data.describe()}; He-normal weights, plain SGD lr {LR}, batch "
                f"{BATCH}, {steps:,} steps (full size {STEPS.full:,}; a few seconds per run on 2 "
                f"cores), retrained identically (same seed, weights and batches) in each of the "
                f"three runs. (a) test accuracy in training mode (batch statistics, running "
                f"stats restored afterwards) for test batches of {BATCH_SIZES} vs eval mode; "
                f"(b) running statistics reset, then re-estimated from up to "
                f"{REESTIMATE_BATCHES.at(scale)} training batches (full size "
                f"{REESTIMATE_BATCHES.full}) with momentum {MOMENTA} and the weights frozen, eval "
                f"accuracy vs batches seen; reference: statistics from a cumulative average "
                f"over one epoch; (c) inputs shifted to {CONTRAST} x + {BRIGHTNESS} (contrast and "
                f"brightness); accuracy with the stale statistics and after recalibrating on "
                f"{RECAL_BATCHES} shifted training batches (momentum=None, no weight change); "
                f"(d) test inputs with Gaussian pixel noise (std {NOISE}, clipped to [0, 1]): "
                f"accuracy with the clean statistics and after recalibrating on {NOISE_RECAL} "
                f"noisy training batches (fresh noise). Scaled down from ImageNet-size nets to "
                f"an MLP; the method is unchanged.")

    def scale_note(self, data: Dataset, scale: float, size: str = "full") -> str:
        return (f"784-100-100-100-10 ReLU MLP, {STEPS.at(scale):,} steps of {BATCH}, "
                f"{len(parts(data).train):,} training images")

    def runs(self, data: Dataset, scale: float, size: str = "full") -> list[Run]:
        base = {"sizes": [data.n_features, *HIDDEN, data.n_classes],
                "steps": STEPS.at(scale), "batch": BATCH, "lr": LR}
        return [Run("batch-size", {**base, "part": "a",
                                   "batch_sizes": list(BATCH_SIZES)}, "(a) train vs eval mode"),
                Run("momentum", {**base, "part": "b",
                                 "reestimate": REESTIMATE_BATCHES.at(scale)},
                    "(b) running-average momentum"),
                Run("shift", {**base, "part": "c", "recal": list(RECAL_BATCHES),
                              "contrast": CONTRAST, "brightness": BRIGHTNESS},
                    "(c) stale statistics"),
                Run("noise", {**base, "part": "d", "noise": NOISE, "recal": NOISE_RECAL},
                    "(d) Gaussian noise, recalibrated")]

    def trained(self, ctx: RunContext, cfg: dict):
        """The BN net every part measures: same seed, weights and batches in every run."""
        trainer = ctx.trainer(mlp_spec(cfg["sizes"], "relu", True), "he", ctx.rng("init"),
                              cfg["lr"], distributed=False)
        stream = derive_seed(ctx.seed, self.name, "batches")
        x, y = parts(ctx.data).train.flat()
        losses = []
        for step in range(cfg["steps"]):
            idx = epoch_batch(stream, len(x), cfg["batch"], step)
            losses.append(trainer.train_step(x[idx], y[idx]))
            if (step + 1) % 50 == 0:
                ctx.report(step + 1, cfg["steps"] + 1)
        return trainer, float(np.mean(losses[-max(1, len(losses) // 10):]))

    def run(self, ctx: RunContext, cfg: dict) -> dict:
        trainer, loss = self.trained(ctx, cfg)
        part = {"a": self._batch_size, "b": self._momentum, "c": self._shift,
                "d": self._noise}[cfg["part"]]
        out = {"final_train_loss": loss, **part(ctx, cfg, trainer)}
        ctx.report(cfg["steps"] + 1, cfg["steps"] + 1)
        return out

    def _batch_size(self, ctx: RunContext, cfg: dict, trainer) -> dict:
        x, y = parts(ctx.data).test.flat()
        train_acc, eval_acc, errors, out = [], [], {}, {}
        for i, b in enumerate(cfg["batch_sizes"]):
            n = len(x) // b * b
            eval_acc.append(evaluate(trainer, x[:n], y[:n])[0] if n else None)
            try:
                train_acc.append(record(out, f"train_mode_acc.{i}",
                                        train_mode_correct(trainer, x, y, b)))
            except ValueError as exc:   # batch 1: BN cannot normalise a single value
                train_acc.append(None)
                errors[str(b)] = str(exc)
        # Eval mode must not depend on the batch: logits one example at a time vs all at once.
        m = min(len(x), 200)
        together = trainer.forward_eval(x[:m])[0]
        alone = np.concatenate([trainer.forward_eval(x[i:i + 1])[0] for i in range(m)])
        return {**out, "batch_sizes": cfg["batch_sizes"], "train_mode_acc": train_acc,
                "eval_mode_acc": eval_acc,
                "eval_acc_full": record(out, "eval_acc_full", evaluate_correct(trainer, x, y)),
                "errors": errors,
                "eval_batch_dependence": float(np.abs(together - alone).max())}

    def _momentum(self, ctx: RunContext, cfg: dict, trainer) -> dict:
        p = parts(ctx.data)
        (x_tr, _), (x_te, y_te) = p.train.flat(), p.test.flat()
        stream = derive_seed(ctx.seed, self.name, "reestimate")
        n_epoch = max(1, len(x_tr) // cfg["batch"])
        recalibrate(trainer, (x_tr[epoch_batch(stream, len(x_tr), cfg["batch"], s)]
                              for s in range(n_epoch)))
        reference = evaluate(trainer, x_te, y_te)[0]
        grid = _log_grid(cfg["reestimate"])
        curves = {}
        for momentum in MOMENTA:
            layers = trainer.bn_layers()
            for m in layers:
                m.reset_running_stats()
                m.momentum = momentum
            acc, seen = [], 0
            for k in grid:
                while seen < k:     # every momentum sees the same batches in the same order
                    trainer.forward_train(x_tr[epoch_batch(stream, len(x_tr), cfg["batch"],
                                                           seen)])
                    seen += 1
                acc.append(evaluate(trainer, x_te, y_te)[0])
            curves[str(momentum)] = acc
        return {"grid": grid, "reference_acc": reference, "acc": curves}

    def _shift(self, ctx: RunContext, cfg: dict, trainer) -> dict:
        p = parts(ctx.data)
        (x_tr, _), (x_te, y_te) = p.train.flat(), p.test.flat()

        def shift(x):
            return (cfg["contrast"] * x + cfg["brightness"]).astype(np.float32)

        clean = evaluate(trainer, x_te, y_te)[0]
        stale = evaluate(trainer, shift(x_te), y_te)[0]
        saved = trainer.state()
        stream = derive_seed(ctx.seed, self.name, "recalibrate")
        recal = []
        for n in cfg["recal"]:
            trainer.load_state(saved)
            recalibrate(trainer, (shift(x_tr[epoch_batch(stream, len(x_tr), cfg["batch"], s)])
                                  for s in range(n)))
            recal.append(evaluate(trainer, shift(x_te), y_te)[0])
        return {"clean_acc": clean, "stale_acc": stale, "recal_batches": cfg["recal"],
                "recal_acc": recal}

    def _noise(self, ctx: RunContext, cfg: dict, trainer) -> dict:
        p = parts(ctx.data)
        (x_tr, _), (x_te, y_te) = p.train.flat(), p.test.flat()
        rng = ctx.rng("noise")

        def noisy(x):
            return np.clip(x + rng.normal(0.0, cfg["noise"], x.shape), 0.0, 1.0).astype(np.float32)

        out: dict = {}
        x_noisy = noisy(x_te)     # one noisy test set, read with both statistics
        record(out, "clean_acc", evaluate_correct(trainer, x_te, y_te))
        record(out, "noisy_acc", evaluate_correct(trainer, x_noisy, y_te))
        stream = derive_seed(ctx.seed, self.name, "recalibrate-noise")
        recalibrate(trainer, (noisy(x_tr[epoch_batch(stream, len(x_tr), cfg["batch"], s)])
                              for s in range(cfg["recal"])))
        record(out, "recal_acc", evaluate_correct(trainer, x_noisy, y_te))
        return {**out, "clean_acc": float(np.mean(unpacked(out, "clean_acc"))),
                "noisy_acc": float(np.mean(unpacked(out, "noisy_acc"))),
                "recal_acc": float(np.mean(unpacked(out, "recal_acc")))}

    def statistics(self, runs: list[Run], metrics: Metrics) -> dict[str, float]:
        a, b, c = metrics["batch-size"], metrics["momentum"], metrics["shift"]
        d = metrics["noise"]
        lost = d["clean_acc"] - d["noisy_acc"]
        pairs = [(bs, t) for bs, t in zip(a["batch_sizes"], a["train_mode_acc"], strict=True)
                 if t is not None]
        eval_acc = a["eval_acc_full"]
        grid, ref = b["grid"], b["reference_acc"]

        def needed(m):
            hit = [k for k, v in zip(grid, b["acc"][m], strict=True) if v >= ref - CLOSE]
            return hit[0] if hit else Bound(grid[-1], math.inf)   # censored

        return {
            SMALL_DROP: eval_acc - pairs[0][1],
            LARGE_GAP: abs(eval_acc - pairs[-1][1]),
            EVAL_DEPENDENCE: a["eval_batch_dependence"],
            SLOW_MOMENTUM: ratio(needed("0.01"), needed("0.1")),
            CUMULATIVE: ratio(needed("0.1"), needed("None")),
            SHIFT_COST: c["clean_acc"] - c["stale_acc"],
            RECAL_LEFT: c["clean_acc"] - c["recal_acc"][-1],
            NOISE_COST: lost,
            NOISE_RECOVERED: (d["recal_acc"] - d["noisy_acc"]) / lost if lost > 0
            else float("nan"),
            "eval-mode test accuracy": eval_acc,
            **{f"(b) batches needed, momentum {m}": needed(m) for m in b["acc"]},
        }

    def rows(self, runs: list[Run], metrics: Metrics) -> list[dict]:
        a, b, c = metrics["batch-size"], metrics["momentum"], metrics["shift"]
        rows = ([{"part": "a", "x": bs, "train_mode_acc": t, "eval_mode_acc": e}
                 for bs, t, e in zip(a["batch_sizes"], a["train_mode_acc"], a["eval_mode_acc"],
                                     strict=True)]
                + [{"part": "b", "x": k, "momentum": m, "eval_acc": v[i]}
                   for m, v in b["acc"].items() for i, k in enumerate(b["grid"])]
                + [{"part": "c", "x": k, "eval_acc": v}
                   for k, v in zip(c["recal_batches"], c["recal_acc"], strict=True)])
        return [{k: r.get(k) for k in ("part", "x", "momentum", "train_mode_acc",
                                        "eval_mode_acc", "eval_acc")} for r in rows]

    def describe(self, runs: list[Run], by_seed) -> dict:
        errors = {e for m in by_seed.values() for e in m["batch-size"]["errors"].values()}
        return {"(a) training mode, batch 1": "; ".join(sorted(errors))[:120] or "ran"}

    def figures(self, runs, by_seed, summary) -> dict:
        import matplotlib.pyplot as plt

        seeds = sorted(by_seed)
        a0, b0, c0 = (by_seed[seeds[0]][k] for k in ("batch-size", "momentum", "shift"))
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
        ax = axes[0]
        ok = [i for i, t in enumerate(a0["train_mode_acc"]) if t is not None]
        band(ax, [a0["batch_sizes"][i] for i in ok],
             [[by_seed[s]["batch-size"]["train_mode_acc"][i] for i in ok] for s in seeds], "o-",
             "training mode (batch stats)")
        ax.set_xscale("log", base=2)
        ax.axhline(np.mean([by_seed[s]["batch-size"]["eval_acc_full"] for s in seeds]),
                   color="tab:green", label="eval mode (any batch)")
        ax.set(xlabel="test batch size", ylabel="test accuracy", ylim=(0, 1),
               title="(a) train() vs eval() at inference")
        ax.legend(loc="lower right", fontsize="small")
        ax = axes[1]
        for m in b0["acc"]:
            band(ax, b0["grid"], [by_seed[s]["momentum"]["acc"][m] for s in seeds], "o-",
                 f"momentum {m}", ms=3)
        ax.set_xscale("log")
        ax.axhline(np.mean([by_seed[s]["momentum"]["reference_acc"] for s in seeds]),
                   color="black", ls=":", label="exact statistics")
        ax.set(xlabel="batches seen by the reset estimator", ylabel="eval accuracy",
               ylim=(0, 1), title="(b) running-average momentum")
        ax.legend(loc="lower right", fontsize="small")
        ax = axes[2]
        labels = (["clean", "affine,\nstale"] + [f"recal.\n{k}" for k in c0["recal_batches"]]
                  + ["noisy,\nstale", "noisy,\nrecal."])
        bars(ax, [[by_seed[s]["shift"]["clean_acc"], by_seed[s]["shift"]["stale_acc"],
                   *by_seed[s]["shift"]["recal_acc"], by_seed[s]["noise"]["noisy_acc"],
                   by_seed[s]["noise"]["recal_acc"]] for s in seeds],
             ["tab:green", "tab:red"] + ["tab:blue"] * len(c0["recal_acc"])
             + ["tab:orange", "tab:purple"], labels)
        ax.set(ylabel="test accuracy", ylim=(0, 1),
               title="(c) affine and (d) noise shifts, recalibration")
        fig.suptitle(BAND_NOTE + "; bars: mean, whiskers min-max", fontsize="small")
        return {"train_eval": fig}
