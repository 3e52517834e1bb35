"""Ioffe & Szegedy 2015, sec. 3.2: BN for convolutional layers is per feature map.

The same CNN (:mod:`normlab.runner.cnn`) with per-channel BatchNorm2d (the paper: statistics over
the mini-batch *and* all spatial positions, one gamma/beta per feature map) vs per-activation BN
(the textbook's reshape of (N, C, H, W) to (N, C*H*W) followed by BatchNorm1d: one mean, variance,
gamma and beta per channel *and position*), plus the net without BN for reference.
"""

from __future__ import annotations

import time

import numpy as np

from ..data import Dataset
from ..runner.base import Experiment, Metrics, Run, RunContext, derive_seed
from ..runner.cnn import cnn_spec, image_shape, norm_param_count
from ..runner.curve import (
    eval_steps,
    final_accuracy,
    resolution_text,
    speedup,
    steps_to,
    train_curve,
)
from ..runner.design import DesignChange
from ..runner.evidence import Criterion, Published
from ..runner.holdout import parts
from ..runner.plots import BAND_NOTE, band, seeds_of
from ..runner.steps import Steps

VARIANTS = {"channel": "batch", "activation": "activation", "none": "none"}
LABELS = {"channel": "per-channel BN2d (paper)", "activation": "per-activation BN (reshape)",
          "none": "no BN"}
STEPS = Steps(1_000, minimum=20)
BATCH = 60
LR = 0.1
INIT_STD = 0.01
N_EVALS = 20
TIMING_REPEATS = Steps(21, minimum=3)
TIMING_IMAGES = 500

AS_GOOD = "final test accuracy, per-channel - per-activation"
FEWER_PARAMS = "BN parameters, per-activation / per-channel"
TARGET_FRACTION = 0.95   # the speed is compared at 95% of the no-BN net's final accuracy
FASTER = "steps to 95% of the no-BN net's final accuracy, no BN / per-channel BN"


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
    same_at_paper = ("the claim compares two ways of normalising the same small CNN (sec. "
                     "3.2's per-feature-map statistics against the textbook's per-activation "
                     "ones); the comparison, not the network's size, is what the source states.")
    criteria = (
        Criterion("per-channel BN is as accurate as per-activation BN", AS_GOOD, -0.01),
        Criterion("... with far fewer parameters", FEWER_PARAMS, 10, log=True,
                  role="demonstration"),
        Criterion("per-channel BN does something: it trains faster than no BN", FASTER, 1.5,
                  log=True),
    )
    published = (
        Published("Ioffe & Szegedy 2015", "sec. 3.2",
                  "normalise each feature map over the mini-batch and all locations, one "
                  "gamma/beta per feature map", "qualitative (a design rule; no ablation "
                  "number)", "Inception on ImageNet", AS_GOOD, qualitative=True),
    )
    definitions = ("Final test accuracy: the test set, once, after the last step. The no-BN "
                   "net's final accuracy = the mean of its last 20% of validation evaluations; "
                   "the speed is compared at 95% of it (as paper-fig1 does), where both nets "
                   "are still learning; steps are interpolated between evaluations (never "
                   "reached: censored). The parameter ratio is arithmetic (C*H*W / C per "
                   "layer), a demonstration.")
    resolution = resolution_text(STEPS.full, N_EVALS)
    pilot_seeds = ("seed 0 (mnist5k and Fashion-MNIST, full size, 2026-11-24); a 3-seed pilot "
                   "(seeds 0-2, mnist5k, 2026-11-29) for the speed target; seeds 0-4 "
                   "(2026-11-28/29)")
    design_changes = (
        DesignChange("the 'BN does something: trains faster than no BN' part (>= 1.5x) added "
                     "to 'as accurate, with >= 10x fewer parameters'",
                     "2026-11-28, be3efed, after the one-seed verdict (holds on both data sets)",
                     "a no-op BN passed on its parameter count alone"),
        DesignChange("the speed target moved from 100% to 95% of the no-BN net's final accuracy",
                     "2026-11-29, 8989719, after a 3-seed pilot (seeds 0-2, which are also "
                     "reported seeds)",
                     "at 100% the target sat on both nets' plateau (0.96) and whichever plateau "
                     "was a point higher decided the ratio (0.4x to 2.7x)"),
        DesignChange("the parameter ratio became a demonstration; 10 extra evaluations in the "
                     "first interval; a net that never reaches the target is censored",
                     "2026-12-07, issue 24, after seeds 0-4 (inconclusive, 1.76x [1.46, 2.11]) "
                     "and 5-9 (holds, 2.37x [2.06, 2.79]) on mnist5k",
                     "98x fewer parameters is arithmetic; the grid floored the BN net's steps"),
    )

    def setup(self, data: Dataset, scale: float, size: str = "full") -> str:
        h, w = image_shape(data.image_shape)
        steps = STEPS.at(scale)
        return (f"On {data.describe()}: the CNN [conv3x3 16 -> BN -> ReLU -> maxpool2] -> "
                f"[conv3x3 32 -> BN -> ReLU -> maxpool2] -> Linear on {h}x{w} inputs (images "
                f"above 16 px 2x2 average-pooled), He-normal conv weights; BN = BatchNorm2d "
                f"(per channel) or per-activation BN (reshape to (N, C*H*W), BatchNorm1d, "
                f"reshape back), or none. Plain SGD lr {LR}, batch {BATCH}, {steps:,} steps, "
                f"identical initial conv weights and batches; validation accuracy (eval "
                f"mode) at {N_EVALS} points, test accuracy once at the end. Eval time: one "
                f"eval-mode forward of {TIMING_IMAGES} test images, the variants "
                f"interleaved, median of {TIMING_REPEATS.full} -- machine- and "
                f"load-dependent, not part of the verdict; the NumPy engine runs each "
                f"BN -> ReLU -> max-pool group of an eval forward as one pass (the same "
                f"values), so there per-channel BN adds almost nothing to it, where torch "
                f"eager runs the layers one by one. Full size took ~1 minute on 2 cores with "
                f"the NumPy engine.")

    def scale_note(self, data: Dataset, scale: float, size: str = "full") -> str:
        return (f"2-conv CNN on {'x'.join(map(str, image_shape(data.image_shape)))} images, "
                f"{STEPS.at(scale):,} steps of {BATCH}")

    def runs(self, data: Dataset, scale: float, size: str = "full") -> list[Run]:
        steps = STEPS.at(scale)
        out = [Run(v, {"variant": v, "steps": steps, "batch": BATCH, "lr": LR,
                       "evals": eval_steps(steps, N_EVALS), "n_classes": data.n_classes},
                   LABELS[v]) for v in VARIANTS]
        out.append(Run("timing", {"variant": "timing", "repeats": TIMING_REPEATS.at(scale),
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
        trainer = ctx.trainer(spec, INIT_STD, ctx.rng("init"), cfg["lr"])
        stream = derive_seed(ctx.seed, self.name, "batches")
        p = parts(data)
        hist = train_curve(ctx, trainer, (p.train.images(), p.train.y),
                           (p.val.images(), p.val.y), (p.test.images(), p.test.y),
                           steps=cfg["steps"], batch=cfg["batch"], evals=cfg["evals"],
                           stream=stream)
        return {**hist, "bn_params": norm_param_count(spec)}

    def _timing(self, ctx: RunContext, cfg: dict) -> dict:
        x = parts(ctx.data).test.images()[:cfg["images"]]
        trainers = {}
        for v in VARIANTS:
            t = ctx.trainer(self._spec(ctx.data, v, cfg["n_classes"]), INIT_STD, ctx.rng("init"),
                            LR)
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

    def statistics(self, runs: list[Run], metrics: Metrics) -> dict[str, float]:
        params = {v: metrics[v]["bn_params"] for v in VARIANTS}
        none, channel = metrics["none"], metrics["channel"]
        target = TARGET_FRACTION * final_accuracy(none["val_acc"])
        budget = none["step"][-1]
        return {
            AS_GOOD: channel["test_acc"] - metrics["activation"]["test_acc"],
            FEWER_PARAMS: params["activation"] / max(params["channel"], 1),
            FASTER: speedup(steps_to(none["step"], none["val_acc"], target),
                            steps_to(channel["step"], channel["val_acc"], target), budget),
            **{f"final test accuracy, {LABELS[v]}": metrics[v]["test_acc"] for v in VARIANTS},
            **{f"eval forward ms, {LABELS[v]} (machine-dependent, not judged)":
               metrics["timing"]["eval_ms_median"][v] for v in VARIANTS},
        }

    def rows(self, runs: list[Run], metrics: Metrics) -> list[dict]:
        return [{"step": s, **{f"val_acc_{v}": metrics[v]["val_acc"][i] for v in VARIANTS}}
                for i, s in enumerate(metrics["channel"]["step"])]

    def figures(self, runs, by_seed, summary) -> dict:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
        ax = axes[0]
        steps = by_seed[min(by_seed)]["channel"]["step"]
        for v, style in zip(VARIANTS, ("-", "-.", "--"), strict=True):
            band(ax, steps, seeds_of(by_seed, v, "val_acc"), style, LABELS[v])
        ax.set(xlabel="training step", ylabel="validation accuracy", title="Accuracy")
        ax.legend(loc="lower right", fontsize="small")
        ax = axes[1]
        ms = {v: [t for s in by_seed for t in by_seed[s]["timing"]["eval_ms_all"][v]]
              for v in VARIANTS}
        ax.boxplot([ms[v] for v in VARIANTS], tick_labels=[LABELS[v] for v in VARIANTS])
        ax.set(ylabel="ms per eval forward", title="Eval time (machine-dependent)")
        ax.tick_params(axis="x", labelsize="x-small")
        fig.suptitle(BAND_NOTE, fontsize="small")
        return {"conv_bn": fig}
