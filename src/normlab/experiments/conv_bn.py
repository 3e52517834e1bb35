"""Ioffe & Szegedy 2015, sec. 3.2: BN for convolutional layers is per feature map.

The same CNN (:mod:`.cnn`) with per-channel BatchNorm2d (the paper: statistics over the
mini-batch *and* all spatial positions, one gamma/beta per feature map) vs per-activation BN
(the textbook's reshape of (N, C, H, W) to (N, C*H*W) followed by BatchNorm1d: one mean, variance,
gamma and beta per channel *and position*), plus the net without BN for reference.
"""

from __future__ import annotations

import time

import numpy as np

from ..data import Dataset
from .base import Experiment, Run, RunContext, Summary, derive_seed, scaled
from .cnn import as_images, cnn_spec, image_shape, norm_param_count
from .curve import eval_steps, final_accuracy, train_curve
from .train import make_trainer

VARIANTS = {"channel": "batch", "activation": "activation", "none": "none"}
LABELS = {"channel": "per-channel BN2d (paper)", "activation": "per-activation BN (reshape)",
          "none": "no BN"}
STEPS = 1_000
BATCH = 60
LR = 0.1
INIT_STD = 0.01
N_EVALS = 20
TIMING_REPEATS = 21
TIMING_IMAGES = 500

# Verdict rules (fixed before any run):
ACC_SLACK = 0.01       # holds if per-channel accuracy >= per-activation - 1 point ...
PARAM_RATIO = 10       # ... with >= 10x fewer BN parameters; does not hold if 2 points lower


class ConvBN(Experiment):
    name = "conv-bn"
    title = "Per-feature-map BN for convolutions (BN paper, sec. 3.2)"
    source = ("Ioffe & Szegedy 2015, sec. 3.2 \"Batch-Normalized Convolutional Networks\"; "
              "Saito, Deep Learning from Scratch sec. 6.3 (the per-activation reshape)")
    claim = ("For convolutional layers BN should normalise each feature map jointly over the "
             "mini-batch and all locations (effective mini-batch m*p*q), learning one gamma/"
             "beta per feature map instead of per activation -- as good a network with far "
             "fewer normalisation parameters, and the convolutional property preserved.")
    quick_scale = 0.1

    def setup(self, data: Dataset, scale: float) -> str:
        h, w = image_shape(data.image_shape)
        steps = scaled(STEPS, scale, 20)
        return (f"On {data.describe()}: the CNN [conv3x3 16 -> BN -> ReLU -> maxpool2] -> "
                f"[conv3x3 32 -> BN -> ReLU -> maxpool2] -> Linear on {h}x{w} inputs (images "
                f"above 16 px 2x2 average-pooled), He-normal conv weights; BN = BatchNorm2d "
                f"(per channel) or per-activation BN (reshape to (N, C*H*W), BatchNorm1d, "
                f"reshape back), or none. Plain SGD lr {LR}, batch {BATCH}, {steps:,} steps, "
                f"identical initial conv weights and batches; test accuracy (eval mode) at "
                f"{N_EVALS} points. Eval time: one eval-mode forward of {TIMING_IMAGES} test "
                f"images, the variants interleaved, median of {TIMING_REPEATS} -- machine- and "
                f"load-dependent, not part of the verdict. Full size took ~1 minute on 2 "
                f"cores with the NumPy engine.")

    def runs(self, data: Dataset, scale: float) -> list[Run]:
        steps = scaled(STEPS, scale, 20)
        out = [Run(v, {"variant": v, "steps": steps, "batch": BATCH, "lr": LR,
                       "evals": eval_steps(steps, N_EVALS), "n_classes": data.n_classes},
                   LABELS[v]) for v in VARIANTS]
        out.append(Run("timing", {"variant": "timing", "repeats": scaled(TIMING_REPEATS, scale, 3),
                                  "images": TIMING_IMAGES, "n_classes": data.n_classes},
                       "eval-time measurement"))
        return out

    def _spec(self, data: Dataset, variant: str, n_classes: int) -> tuple:
        return cnn_spec(image_shape(data.image_shape), n_classes, VARIANTS[variant])

    def run(self, ctx: RunContext, cfg: dict) -> dict:
        data = ctx.data
        if cfg["variant"] == "timing":
            return self._timing(ctx, cfg)
        spec = self._spec(data, cfg["variant"], cfg["n_classes"])
        trainer = make_trainer(ctx.engine, spec, INIT_STD, ctx.rng("init"), cfg["lr"])
        stream = derive_seed(ctx.seed, self.name, "batches")
        hist = train_curve(ctx, trainer, (as_images(data.x_train), data.y_train),
                           (as_images(data.x_test), data.y_test), steps=cfg["steps"],
                           batch=cfg["batch"], evals=cfg["evals"], stream=stream)
        return {**hist, "bn_params": norm_param_count(spec)}

    def _timing(self, ctx: RunContext, cfg: dict) -> dict:
        x = as_images(ctx.data.x_test[:cfg["images"]])
        trainers = {}
        for v in VARIANTS:
            t = make_trainer(ctx.engine, self._spec(ctx.data, v, cfg["n_classes"]), INIT_STD,
                             ctx.rng("init"), LR)
            t.forward_eval(x[:2])   # warm-up (allocations, lazy imports)
            trainers[v] = t
        times = {v: [] for v in VARIANTS}
        for i in range(cfg["repeats"]):
            for v in VARIANTS:   # interleaved: machine noise hits every variant alike
                t0 = time.perf_counter()
                trainers[v].forward_eval(x)
                times[v].append(time.perf_counter() - t0)
            ctx.report(i + 1, cfg["repeats"])
        return {"eval_ms_median": {v: 1e3 * float(np.median(t)) for v, t in times.items()},
                "eval_ms_all": {v: [1e3 * s for s in t] for v, t in times.items()}}

    def summarize(self, runs: list[Run], metrics: dict[str, dict]) -> Summary:
        acc = {v: final_accuracy(metrics[v]["test_acc"]) for v in VARIANTS}
        params = {v: metrics[v]["bn_params"] for v in VARIANTS}
        ratio = params["activation"] / max(params["channel"], 1)
        gap = acc["channel"] - acc["activation"]
        verdict = ("holds" if gap >= -ACC_SLACK and ratio >= PARAM_RATIO else
                   "does not hold" if gap < -2 * ACC_SLACK else "inconclusive")
        ms = metrics["timing"]["eval_ms_median"]
        measured = {
            "final test accuracy, per-channel BN2d (mean of last 20% of evals)":
                round(acc["channel"], 4),
            "final test accuracy, per-activation BN": round(acc["activation"], 4),
            "final test accuracy, no BN": round(acc["none"], 4),
            "BN parameters (gamma + beta), per-channel": params["channel"],
            "BN parameters (gamma + beta), per-activation": params["activation"],
            "parameter ratio per-activation / per-channel": round(ratio, 1),
            "eval forward ms, median (machine-dependent): per-channel / per-activation / "
            "no BN": " / ".join(f"{ms[v]:.2f}" for v in VARIANTS),
        }
        reason = (f"per-channel accuracy {acc['channel']:.4f} vs per-activation "
                  f"{acc['activation']:.4f} (difference {gap:+.4f}) with {ratio:.0f}x fewer BN "
                  f"parameters -> {verdict}")
        thresholds = (f"Holds if per-channel BN's final test accuracy >= per-activation BN's - "
                      f"{ACC_SLACK} and it has >= {PARAM_RATIO}x fewer BN parameters; does not "
                      f"hold if its accuracy is more than {2 * ACC_SLACK} lower; otherwise "
                      f"inconclusive. Timings are reported, not judged.")
        rows = [{"step": s, **{f"test_acc_{v}": metrics[v]["test_acc"][i] for v in VARIANTS}}
                for i, s in enumerate(metrics["channel"]["step"])]
        return Summary(measured, verdict, reason, thresholds, rows)

    def figures(self, runs: list[Run], metrics: dict[str, dict], summary: Summary) -> dict:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
        ax = axes[0]
        for v, style in zip(VARIANTS, ("-", "-.", "--"), strict=True):
            ax.plot(metrics[v]["step"], metrics[v]["test_acc"], style, label=LABELS[v])
        ax.set(xlabel="training step", ylabel="test accuracy", title="Test accuracy")
        ax.legend(loc="lower right", fontsize="small")
        ax = axes[1]
        ms = metrics["timing"]["eval_ms_all"]
        ax.boxplot([ms[v] for v in VARIANTS], tick_labels=[LABELS[v] for v in VARIANTS])
        ax.set(ylabel="ms per eval forward", title="Eval time (machine-dependent)")
        ax.tick_params(axis="x", labelsize="x-small")
        return {"conv_bn": fig}
