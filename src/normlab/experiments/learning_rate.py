"""Ioffe & Szegedy 2015, sec. 3.3 and 4.2.1: BN enables higher learning rates.

Two nets, each trained with and without BN at five learning rates spanning 100x, from identical
initial weights on identical batches: the paper's sigmoid MLP (as in ``paper-fig1``) and a small
ReLU CNN (:mod:`.cnn`). We measure (a) at which rates each net trains at all and (b) how many
steps BN needs to reach the best accuracy the plain net reaches at any rate (the paper's Fig. 3
measures steps to the plain Inception's final accuracy: 14x fewer with BN-x5).
"""

from __future__ import annotations

from ..data import Dataset
from .base import Experiment, Run, RunContext, Summary, derive_seed, scaled
from .cnn import as_images, cnn_spec, image_shape
from .curve import eval_steps, final_accuracy, steps_to, train_curve
from .models import mlp_spec
from .train import make_trainer

BATCH = 60
MULTIPLIERS = (1, 3, 10, 30, 100)
MODELS = {  # name -> (base learning rate, steps at full size, init std of Linear weights)
    "mlp": (0.1, 3000, 0.01),
    "cnn": (0.03, 800, 0.01),
}
HIDDEN = (100, 100, 100)
N_EVALS = 20

# Verdict rules (fixed before any run):
TRAINS = 0.5          # a run "trains" if its final test accuracy (last 20% of evals) >= 0.5
SPEEDUP_HOLDS = 1.5   # BN reaches the plain net's best accuracy in >= 1.5x fewer steps
# Published (BN paper Fig. 3, steps to 72.2% top-1 on ImageNet):
PAPER_STEPS = {"Inception": 31.0e6, "BN-Baseline": 13.3e6, "BN-x5": 2.1e6, "BN-x30": 2.7e6}


class LearningRate(Experiment):
    name = "learning-rate"
    title = "BN trains at learning rates where the plain net diverges or stalls (BN paper 3.3)"
    source = ("Ioffe & Szegedy 2015, sec. 3.3 \"Batch Normalization enables higher learning "
              "rates\", sec. 4.2.1 and Fig. 3")
    claim = ("With BN, much higher learning rates can be used without divergence or stalling, "
             "and the BN net reaches the plain net's best accuracy in far fewer steps (Fig. 3, "
             "steps to 72.2% top-1: Inception 31.0M, BN-Baseline 13.3M, BN-x5 2.1M -- 14x "
             "fewer -- and BN-x30 2.7M).")
    quick_scale = 0.1

    def setup(self, data: Dataset, scale: float) -> str:
        lrs = {m: [round(base * k, 4) for k in MULTIPLIERS] for m, (base, _, _) in MODELS.items()}
        steps = {m: scaled(s, scale, 20) for m, (_, s, _) in MODELS.items()}
        h, w = image_shape(data.image_shape)
        sizes = "-".join(map(str, (data.n_features, *HIDDEN, data.n_classes)))
        return (f"On {data.describe()}. (1) the paper's {sizes} sigmoid MLP (BatchNorm1d before "
                f"each sigmoid), Linear weights N(0, 0.01^2), lrs {lrs['mlp']}, "
                f"{steps['mlp']:,} steps; (2) a small CNN on {h}x{w} inputs (images above "
                f"16 px are 2x2 average-pooled first): [conv3x3 16 -> BatchNorm2d -> ReLU -> "
                f"maxpool2] -> [conv3x3 32 -> BN -> ReLU -> maxpool2] -> Linear, He-normal conv "
                f"weights, lrs {lrs['cnn']}, {steps['cnn']:,} steps. Plain SGD (no momentum), "
                f"batch {BATCH} (shuffled epochs), with and without BN from identical weights "
                f"and batches; test accuracy (eval mode) at {N_EVALS} points. Scaled down from "
                f"the paper's Inception/ImageNet runs (millions of steps): the method -- "
                f"raising the rate and counting steps to a fixed accuracy -- is kept. Full size "
                f"took 6 minutes on a loaded 2-core machine (NumPy engine, one BLAS thread).")

    def runs(self, data: Dataset, scale: float) -> list[Run]:
        out = []
        for model, (base, steps, std) in MODELS.items():
            n = scaled(steps, scale, 20)
            for k in MULTIPLIERS:
                for bn in (False, True):
                    lr = round(base * k, 6)
                    cfg = {"model": model, "lr": lr, "bn": bn, "steps": n, "batch": BATCH,
                           "init_std": std, "evals": eval_steps(n, N_EVALS),
                           "n_classes": data.n_classes}
                    out.append(Run(f"{model}-lr{lr:g}-{'bn' if bn else 'plain'}", cfg,
                                   f"{model} lr {lr:g} {'with' if bn else 'without'} BN"))
        return out

    def run(self, ctx: RunContext, cfg: dict) -> dict:
        data = ctx.data
        if cfg["model"] == "mlp":
            spec = mlp_spec([data.n_features, *HIDDEN, cfg["n_classes"]], "sigmoid", cfg["bn"])
            train, test = data.flat("train"), data.flat("test")
        else:
            spec = cnn_spec(image_shape(data.image_shape), cfg["n_classes"],
                            "batch" if cfg["bn"] else "none")
            train = (as_images(data.x_train), data.y_train)
            test = (as_images(data.x_test), data.y_test)
        # Shared "init"/"batches" streams per model: all rates and both nets start equal.
        trainer = make_trainer(ctx.engine, spec, cfg["init_std"], ctx.rng("init", cfg["model"]),
                               cfg["lr"])
        stream = derive_seed(ctx.seed, self.name, "batches", cfg["model"])
        return train_curve(ctx, trainer, train, test, steps=cfg["steps"], batch=cfg["batch"],
                           evals=cfg["evals"], stream=stream)

    def summarize(self, runs: list[Run], metrics: dict[str, dict]) -> Summary:
        measured, reasons, verdicts, rows = {}, [], [], []
        for model in MODELS:
            mine = [r for r in runs if r.config["model"] == model]
            lrs = sorted({r.config["lr"] for r in mine})
            by = {(r.config["lr"], r.config["bn"]): metrics[r.key] for r in mine}
            final = {k: final_accuracy(m["test_acc"]) for k, m in by.items()}
            trains = {k: v >= TRAINS and by[k]["diverged_at"] is None for k, v in final.items()}
            ok_bn = [lr for lr in lrs if trains[(lr, True)]]
            ok_plain = [lr for lr in lrs if trains[(lr, False)]]
            only_bn = [lr for lr in ok_bn if lr not in ok_plain]
            a = ("holds" if only_bn and len(ok_bn) >= len(ok_plain) else
                 "does not hold" if len(ok_bn) <= len(ok_plain) and not only_bn else
                 "inconclusive")
            best_lr = max(lrs, key=lambda lr: final[(lr, False)])
            target = final[(best_lr, False)]
            plain = by[(best_lr, False)]
            s_plain = steps_to(plain["step"], plain["test_acc"], target)
            s_bn = {lr: steps_to(by[(lr, True)]["step"], by[(lr, True)]["test_acc"], target)
                    for lr in lrs}
            reached = {lr: s for lr, s in s_bn.items() if s is not None}
            if reached and s_plain:
                fastest = min(reached, key=reached.get)
                ratio = s_plain / reached[fastest]
            else:
                fastest, ratio = None, 0.0
            b = ("holds" if ratio >= SPEEDUP_HOLDS else
                 "does not hold" if ratio < 1.0 else "inconclusive")
            v = (a if a == b else "does not hold" if "does not hold" in (a, b)
                 else "inconclusive")
            verdicts.append(v)
            measured.update({
                f"{model}: rates where the plain net trains": ok_plain or "none",
                f"{model}: rates where the BN net trains": ok_bn or "none",
                f"{model}: plain net's best final accuracy (lr {best_lr:g})": round(target, 4),
                f"{model}: best final accuracy with BN": round(max(final[(lr, True)]
                                                                  for lr in lrs), 4),
                f"{model}: steps to that accuracy, plain": s_plain,
                f"{model}: steps to it with BN (fastest rate)":
                    f"{reached[fastest]} (lr {fastest:g})" if fastest is not None
                    else "not reached",
                f"{model}: step ratio plain / BN": round(ratio, 2) if fastest else "n/a",
            })
            reasons.append(f"{model}: BN-only rates {only_bn or 'none'} -> {a}; step ratio "
                           f"{ratio:.2f} -> {b}; {model} {v}")
            for lr in lrs:
                for bn in (False, True):
                    m = by[(lr, bn)]
                    rows.append({"model": model, "lr": lr, "bn": bn,
                                 "final_test_acc": final[(lr, bn)],
                                 "diverged_at": m["diverged_at"],
                                 "steps_to_plain_best": s_bn[lr] if bn else
                                 steps_to(m["step"], m["test_acc"], target)})
        measured["reference: BN paper Fig. 3 steps to 72.2% (Inception / BN-Baseline / BN-x5 "
                 "/ BN-x30)"] = "31.0M / 13.3M / 2.1M (14x fewer) / 2.7M"
        verdict = (verdicts[0] if len(set(verdicts)) == 1 else "inconclusive")
        thresholds = (f"Per net: 'trains' = final test accuracy (mean of the last 20% of "
                      f"evaluations) >= {TRAINS} without a non-finite loss. (a) holds if BN "
                      f"trains at some rate where the plain net does not, and at no fewer "
                      f"rates; does not hold if BN trains at no more rates and at no rate where "
                      f"the plain net fails. (b) target = the plain net's best final accuracy "
                      f"over all rates; holds if plain's steps to it at that rate / BN's fewest "
                      f"steps to it (any rate) >= {SPEEDUP_HOLDS}; does not hold if < 1 or BN "
                      f"never reaches it. A net holds if (a) and (b) hold, does not hold if "
                      f"either fails. Overall: the common verdict of both nets, else "
                      f"inconclusive.")
        return Summary(measured, verdict, "; ".join(reasons), thresholds, rows)

    def figures(self, runs: list[Run], metrics: dict[str, dict], summary: Summary) -> dict:
        import matplotlib.pyplot as plt

        figs = {}
        for model in MODELS:
            mine = [r for r in runs if r.config["model"] == model]
            lrs = sorted({r.config["lr"] for r in mine})
            fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained",
                                     sharey=True)
            cmap = plt.get_cmap("viridis")
            for r in mine:
                m, i = metrics[r.key], lrs.index(r.config["lr"])
                ax = axes[1 if r.config["bn"] else 0]
                ax.plot(m["step"], m["test_acc"], color=cmap(i / max(1, len(lrs) - 1)),
                        label=f"lr {r.config['lr']:g}")
            for ax, title in zip(axes, ("without BN", "with BN"), strict=True):
                ax.set(xlabel="training step", ylabel="test accuracy", ylim=(0, 1),
                       title=f"{model.upper()} {title}")
            axes[1].legend(loc="lower right", fontsize="small")
            figs[f"{model}_curves"] = fig
        fig, ax = plt.subplots(figsize=(6, 3.8), layout="constrained")
        for model, marker in zip(MODELS, "os", strict=True):
            mine = [r for r in runs if r.config["model"] == model]
            for bn, style in ((False, "--"), (True, "-")):
                pts = sorted((r.config["lr"], final_accuracy(metrics[r.key]["test_acc"]))
                             for r in mine if r.config["bn"] == bn)
                ax.semilogx(*zip(*pts, strict=True), style, marker=marker,
                            label=f"{model} {'BN' if bn else 'no BN'}")
        ax.axhline(TRAINS, color="tab:red", lw=0.8, ls=":", label="'trains' threshold")
        ax.set(xlabel="learning rate", ylabel="final test accuracy", ylim=(0, 1),
               title="Final accuracy vs learning rate")
        ax.legend(loc="best", fontsize="small")
        figs["final_vs_lr"] = fig
        return figs
