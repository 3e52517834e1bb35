"""Ioffe & Szegedy 2015, sec. 3.3 and 4.2.1: BN enables higher learning rates.

Two nets, each trained with and without BN at five learning rates spanning 100x, from identical
initial weights on identical batches: the paper's sigmoid MLP (as in ``paper-fig1``) and a small
ReLU CNN (:mod:`normlab.runner.cnn`). Per seed and net we measure, on the validation part,

(a) how much higher BN can go: the highest rate at which the BN net trains over the highest
    rate at which the plain net trains (only rates above the plain net's best stable rate count
    as "higher"; a plain net that stalls at a *low* rate says nothing about high ones);
(b) how much faster BN gets there: the plain net's best final accuracy over all rates is the
    target (the paper's Fig. 3 counts steps to the plain Inception's final accuracy); each net
    uses its own best rate -- the one that reaches the target in the fewest steps -- and steps
    are interpolated between evaluations, so a ratio is not one evaluation interval.

At paper size the CNN is a ResNet-20-style network on full 28x28 images
(:mod:`normlab.runner.resnet`, He et al. 2016 sec. 4.2), with BN after every convolution or without
any norm; the MLP is the same.
"""

from __future__ import annotations

from ..data import Dataset
from ..engines.spec import mlp_spec
from ..runner import resnet
from ..runner.base import Experiment, Metrics, Run, RunContext, derive_seed
from ..runner.cnn import cnn_spec, image_shape
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
from ..runner.plots import BAND_NOTE, band
from ..runner.steps import Steps

BATCH = 60
MULTIPLIERS = (1, 3, 10, 30, 100)
MODELS = {  # name -> (base learning rate, steps, init std of Linear weights)
    "mlp": (0.1, Steps(3000, minimum=20), 0.01),
    "cnn": (0.03, Steps(800, minimum=20), 0.01),
}
# --size paper: the CNN is a ResNet-20 (steps: the GPU budget, docs "Sizes"); the MLP is
# unchanged. Rates 0.01..1: a pilot (below) found the plain ResNet diverging at 0.3.
PAPER_RESNET = (0.01, Steps(1500, minimum=20), 0.01)
PAPER_PILOT = ("Design pilot for the ResNet's rates (mnist5k, seed 0, 300 steps, before the "
               "bars were fixed): without BN it diverged at lr 0.3 and 1 and learned slowly at "
               "0.003-0.1 (17-33% validation accuracy); with BN 94% at 0.1 and 98% at 1.")


def models(size: str) -> dict[str, tuple]:
    """name -> (base rate, steps, init std, architecture) at ``size``."""
    out = {m: (*v, m) for m, v in MODELS.items()}
    if size == "paper":
        out["cnn"] = (*PAPER_RESNET, "resnet")
    return out
HIDDEN = (100, 100, 100)
N_EVALS = 40
TRAINS = 0.5          # a run "trains" if its final validation accuracy >= 0.5 and never diverges
PAPER_SETUP = ("Inception on ImageNet (LSVRC2012), batch 32 per replica, 31M steps for the "
               "baseline; BN-x5 / BN-x30 = BN-Inception with 5x / 30x the initial learning rate")


def higher(model: str) -> str:
    return f"{model}: highest rate where BN trains / where the plain net trains"


def fewer_steps(model: str) -> str:
    return f"{model}: steps to the plain net's best accuracy, plain / BN (each at its best rate)"


def same_rate(model: str) -> str:
    return (f"{model}: steps to the plain net's best accuracy, plain / BN (both at the plain "
            f"net's best rate)")


class LearningRate(Experiment):
    name = "learning-rate"
    title = "BN trains at learning rates where the plain net diverges or stalls (BN paper 3.3)"
    source = ("Ioffe & Szegedy 2015, sec. 3.3 \"Batch Normalization enables higher learning "
              "rates\", sec. 4.2.1 and Fig. 3")
    claim = ("With BN, much higher learning rates can be used without divergence or stalling, "
             "and the BN net reaches the plain net's best accuracy in far fewer steps (Fig. 3, "
             "steps to 72.2% top-1: Inception 31.0M; BN-Baseline, BN alone at Inception's "
             "rate, 13.3M, 2.3x fewer; BN-x5, BN with a 5x rate and other changes, 2.1M, "
             "14.8x fewer; BN-x30 2.7M).")
    quick_scale = 0.1
    criteria = tuple(c for m in MODELS for c in (
        Criterion(f"(a) {m}: BN trains at a higher rate", higher(m), 3.0, log=True),
        Criterion(f"(b) {m}: BN reaches the plain net's best sooner", fewer_steps(m), 1.5,
                  log=True)))
    published = (
        Published("Ioffe & Szegedy 2015", "Fig. 3 / sec. 4.2.2",
                  "steps to 72.2% top-1, Inception / BN-Baseline (BN alone, same rate)",
                  "31.0M / 13.3M = 2.3x", PAPER_SETUP, same_rate("cnn"),
                  comparable="BN alone at one rate: ours runs both nets at the plain net's "
                             "best rate; a 2-conv CNN on 14x14 images for hundreds of steps, "
                             "not Inception for millions"),
        Published("Ioffe & Szegedy 2015", "Fig. 3 / sec. 4.2.2",
                  "steps to 72.2% top-1, Inception / BN-x5",
                  "31.0M / 2.1M = 14.8x (BN-x5 bundles BN with a 5x rate, less L2 and "
                  "dropout, faster decay, no LRN, fewer distortions)", PAPER_SETUP,
                  fewer_steps("cnn"),
                  comparable="ours also raises the rate (each net at its best rate) but "
                             "changes nothing else, so it should fall short of 14.8x"),
        Published("Ioffe & Szegedy 2015", "sec. 4.2.1-4.2.2",
                  "learning rates used with BN", "BN-x5 and BN-x30 train at 5x and 30x "
                  "Inception's initial rate (BN-x30 to 74.8%); the highest usable rate of "
                  "either net was not measured, so there is no published ratio",
                  PAPER_SETUP, higher("cnn"), qualitative=True,
                  comparable="ours is a measured ratio of highest trainable rates on a grid "
                             "of factor ~3; the paper's 30x is a rate it used, not a limit"),
        Published("Ioffe & Szegedy 2015", "sec. 4.2.2",
                  "sigmoid Inception without BN", "never better than 1/1000 accuracy; with "
                  "BN (BN-x5-Sigmoid) 69.8%", PAPER_SETUP, higher("mlp")),
    )
    definitions = (f"'Trains' = final validation accuracy (mean of the last 20% of "
                   f"evaluations) >= {TRAINS} without a non-finite loss; a net that trains at "
                   f"no rate counts as training at a third of the lowest; the ratio moves in "
                   f"grid steps (3.33x or 3x), so it is often equal on every seed and then "
                   f"judged by the sign test. Steps to the target are interpolated between "
                   f"evaluations; a net that never reaches it is censored.")
    resolution = ("MLP: " + resolution_text(MODELS["mlp"][1].full, N_EVALS) + " CNN: "
                  + resolution_text(MODELS["cnn"][1].full, N_EVALS))
    pilot_seeds = ("seed 0 (mnist5k and Fashion-MNIST, full size, 2026-11-24: the old design); "
                   "seeds 0-4 (2026-11-28/29); paper size: seed 0, mnist5k, 300 steps (the "
                   "ResNet's rates)")
    design_changes = (
        DesignChange("one-seed thresholds became per-net criteria over seeds: (a) the highest "
                     "trainable rate ratio >= 3, (b) steps to the plain net's best accuracy, "
                     "each net at its best rate, >= 1.5x; 'trains' judged on validation "
                     "accuracy; 40 evaluations instead of 20, interpolated",
                     "2026-11-28, 88499b8, after the one-seed verdict (inconclusive on both)",
                     "evidence round 1 (issue 15); the old rule compared fixed rates"),
        DesignChange("paper size: the ResNet's rates 0.01..1",
                     "2026-11-29, 0a3711f, after a pilot at seed 0 (300 steps)",
                     "the plain ResNet diverged at 0.3 and 1"),
        DesignChange("10 extra evaluations in the first interval; a net that never reaches "
                     "the target is censored; the BN-alone (same-rate) ratio reported for the "
                     "2.3x comparison",
                     "2026-12-07, issue 24, after seeds 0-4 (does not hold on both)",
                     "the grid floored the fastest net's steps; 2x the budget was invented"),
    )

    def setup(self, data: Dataset, scale: float, size: str = "full") -> str:
        ms = models(size)
        lrs = {m: [round(base * k, 4) for k in MULTIPLIERS] for m, (base, *_) in ms.items()}
        steps = {m: s.at(scale) for m, (_, s, *_) in ms.items()}
        sizes = "-".join(map(str, (data.n_features, *HIDDEN, data.n_classes)))
        if ms["cnn"][3] == "resnet":
            cnn = resnet.describe(data.image_shape, "BatchNorm2d (or nothing)")
        else:
            h, w = image_shape(data.image_shape)
            cnn = (f"a small CNN on {h}x{w} inputs (images above 16 px are 2x2 average-pooled "
                   f"first): [conv3x3 16 -> BatchNorm2d -> ReLU -> maxpool2] -> [conv3x3 32 -> "
                   f"BN -> ReLU -> maxpool2] -> Linear, He-normal conv weights")
        return (f"On {data.describe()}. (1) the paper's {sizes} sigmoid MLP (BatchNorm1d before "
                f"each sigmoid), Linear weights N(0, 0.01^2), lrs {lrs['mlp']}, "
                f"{steps['mlp']:,} steps; (2) {cnn}, lrs {lrs['cnn']}, {steps['cnn']:,} steps. "
                f"Plain SGD (no momentum), "
                f"batch {BATCH} (shuffled epochs), with and without BN from identical weights "
                f"and batches; validation accuracy (eval mode) at {N_EVALS} points, test "
                f"accuracy once at the end. Scaled down from the paper's Inception/ImageNet "
                f"runs (millions of steps): the method -- raising the rate and counting steps "
                f"to a fixed accuracy -- is kept."
                + (f" {PAPER_PILOT}" if ms["cnn"][3] == "resnet" else ""))

    def scale_note(self, data: Dataset, scale: float, size: str = "full") -> str:
        return ", ".join(f"{'ResNet-20' if arch == 'resnet' else m}: {s.at(scale):,} "
                         f"steps of {BATCH}" for m, (_, s, _, arch) in models(size).items())

    def runs(self, data: Dataset, scale: float, size: str = "full") -> list[Run]:
        out = []
        for model, (base, steps, std, arch) in models(size).items():
            n = steps.at(scale)
            for k in MULTIPLIERS:
                for bn in (False, True):
                    lr = round(base * k, 6)
                    cfg = {"model": model, "arch": arch, "lr": lr, "bn": bn, "steps": n,
                           "batch": BATCH, "init_std": std, "evals": eval_steps(n, N_EVALS),
                           "n_classes": data.n_classes}
                    out.append(Run(f"{model}-lr{lr:g}-{'bn' if bn else 'plain'}", cfg,
                                   f"{model} lr {lr:g} {'with' if bn else 'without'} BN"))
        return out

    def run(self, ctx: RunContext, cfg: dict) -> dict:
        p = parts(ctx.data)
        if cfg["model"] == "mlp":
            spec = mlp_spec([ctx.data.n_features, *HIDDEN, cfg["n_classes"]], "sigmoid",
                            cfg["bn"])
            train, val, test = p.train.flat(), p.val.flat(), p.test.flat()
        elif cfg.get("arch") == "resnet":
            spec = resnet.resnet_spec(ctx.data.image_shape, cfg["n_classes"],
                                      "batch" if cfg["bn"] else "none")
            train, val, test = ((q.images(pool=False), q.y) for q in (p.train, p.val, p.test))
        else:
            spec = cnn_spec(image_shape(ctx.data.image_shape), cfg["n_classes"],
                            "batch" if cfg["bn"] else "none")
            train, val, test = ((q.images(), q.y) for q in (p.train, p.val, p.test))
        # Shared "init"/"batches" streams per model: all rates and both nets start equal.
        trainer = ctx.trainer(spec, cfg["init_std"], ctx.rng("init", cfg["model"]), cfg["lr"])
        stream = derive_seed(ctx.seed, self.name, "batches", cfg["model"])
        return train_curve(ctx, trainer, train, val, test, steps=cfg["steps"],
                           batch=cfg["batch"], evals=cfg["evals"], stream=stream)

    def statistics(self, runs: list[Run], metrics: Metrics) -> dict[str, float]:
        out = {}
        for model in MODELS:
            mine = [r for r in runs if r.config["model"] == model]
            lrs = sorted({r.config["lr"] for r in mine})
            by = {(r.config["lr"], r.config["bn"]): metrics[r.key] for r in mine}
            final = {k: final_accuracy(m["val_acc"]) for k, m in by.items()}
            trains = {k: v >= TRAINS and by[k]["diverged_at"] is None for k, v in final.items()}

            def top(bn, trains=trains, lrs=lrs):
                ok = [lr for lr in lrs if trains[(lr, bn)]]
                return max(ok) if ok else lrs[0] / 3

            target = max(final[(lr, False)] for lr in lrs)
            budget = by[(lrs[0], False)]["step"][-1]

            def fastest(bn, by=by, lrs=lrs, target=target):
                hits = [s for s in (steps_to(by[(lr, bn)]["step"], by[(lr, bn)]["val_acc"],
                                             target) for lr in lrs) if s is not None]
                return min(hits) if hits else None

            out[higher(model)] = top(True) / top(False)
            out[fewer_steps(model)] = speedup(fastest(False), fastest(True), budget)
            plain_at = {lr: steps_to(by[(lr, False)]["step"], by[(lr, False)]["val_acc"],
                                     target) for lr in lrs}
            reached = [lr for lr in lrs if plain_at[lr] is not None]
            best = min(reached, key=lambda lr: plain_at[lr]) if reached else lrs[0]
            out[same_rate(model)] = speedup(
                plain_at[best], steps_to(by[(best, True)]["step"], by[(best, True)]["val_acc"],
                                         target), budget)
            out[f"{model}: plain net's best validation accuracy (the target)"] = target
            out[f"{model}: best final test accuracy, plain"] = max(by[(lr, False)]["test_acc"]
                                                                   for lr in lrs)
            out[f"{model}: best final test accuracy, BN"] = max(by[(lr, True)]["test_acc"]
                                                                for lr in lrs)
        return out

    def rows(self, runs: list[Run], metrics: Metrics) -> list[dict]:
        return [{"model": r.config["model"], "lr": r.config["lr"], "bn": r.config["bn"],
                 "final_val_acc": final_accuracy(metrics[r.key]["val_acc"]),
                 "test_acc": metrics[r.key]["test_acc"],
                 "diverged_at": metrics[r.key]["diverged_at"]} for r in runs]

    def figures(self, runs, by_seed, summary) -> dict:
        import matplotlib.pyplot as plt

        figs = {}
        seeds = sorted(by_seed)
        cmap = plt.get_cmap("viridis")
        for model in MODELS:
            mine = [r for r in runs if r.config["model"] == model]
            lrs = sorted({r.config["lr"] for r in mine})
            fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained",
                                     sharey=True)
            for r in mine:
                i = lrs.index(r.config["lr"])
                band(axes[1 if r.config["bn"] else 0], by_seed[seeds[0]][r.key]["step"],
                     [by_seed[s][r.key]["val_acc"] for s in seeds], "-",
                     f"lr {r.config['lr']:g}", color=cmap(i / max(1, len(lrs) - 1)))
            for ax, title in zip(axes, ("without BN", "with BN"), strict=True):
                ax.set(xlabel="training step", ylabel="validation accuracy", ylim=(0, 1),
                       title=f"{model.upper()} {title}")
            axes[1].legend(loc="lower right", fontsize="small")
            fig.suptitle(BAND_NOTE, fontsize="small")
            figs[f"{model}_curves"] = fig
        fig, ax = plt.subplots(figsize=(6, 3.8), layout="constrained")
        for model, marker in zip(MODELS, "os", strict=True):
            for bn, style in ((False, "--"), (True, "-")):
                mine = sorted((r for r in runs if r.config["model"] == model
                               and r.config["bn"] == bn), key=lambda r: r.config["lr"])
                band(ax, [r.config["lr"] for r in mine],
                     [[final_accuracy(by_seed[s][r.key]["val_acc"]) for r in mine]
                      for s in seeds], style, f"{model} {'BN' if bn else 'no BN'}",
                     marker=marker)
        ax.set_xscale("log")
        ax.axhline(TRAINS, color="tab:red", lw=0.8, ls=":", label="'trains' threshold")
        ax.set(xlabel="learning rate", ylabel="final validation accuracy", ylim=(0, 1),
               title="Final accuracy vs learning rate")
        ax.legend(loc="best", fontsize="small")
        figs["final_vs_lr"] = fig
        return figs
