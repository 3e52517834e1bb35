"""BN as a regularizer (Ioffe & Szegedy 2015, sec. 3.4; Deep Learning from Scratch sec. 6.4.3).

Sec. 3.4: "a training example is seen in conjunction with other examples in the mini-batch, and
the training network no longer produces deterministic values for a given training example. In
our experiments, we found this effect to be advantageous to the generalization of the network.
Whereas Dropout is typically used to reduce overfitting, in a batch-normalized network we found
that it can be either removed or reduced in strength." Measured the textbook's way: a network
that overfits a tiny training set (DLfS sec. 6.4.1: 300 MNIST images, six hidden layers of 100),
trained with and without BN, with and without dropout (ratio 0.2, DLfS sec. 6.4.3).
"""

from __future__ import annotations

import numpy as np

from ..data import Dataset
from .base import Experiment, Run, RunContext, Summary, derive_seed, scaled
from .models import mlp_spec
from .train import epoch_batch, evaluate
from .train_eval import he_trainer

N_TRAIN = 300
HIDDEN = (100,) * 6
BATCH = 100
LR = 0.01
EPOCHS = 201
N_EVALS = 50          # evaluation points over training
DROPOUT = 0.2
VARIANTS = {"plain": (False, 0.0), "dropout": (False, DROPOUT), "bn": (True, 0.0),
            "bn+dropout": (True, DROPOUT)}

# Verdict rules (fixed before any run):
NARROWS = 0.02       # BN alone narrows the train-test gap by >= 2 points vs the plain net
REPLACES = 0.01      # ... and its test accuracy is >= (plain + dropout) - 1 point


def regularized_spec(sizes: list[int], bn: bool, dropout: float) -> tuple:
    """Linear [-> BN] -> ReLU [-> Dropout] per hidden layer (dropout after the nonlinearity)."""
    spec = []
    for layer in mlp_spec(sizes, "relu", bn):
        spec.append(layer)
        if layer[0] == "relu" and dropout > 0:
            spec.append(("dropout", dropout))
    return tuple(spec)


class Regularization(Experiment):
    name = "regularization"
    title = "BN regularizes: it narrows the train/test gap and reduces the need for dropout"
    source = ("Ioffe & Szegedy 2015, sec. 3.4 \"Batch Normalization regularizes the model\"; "
              "Saito, Deep Learning from Scratch (2016), sec. 6.4.1 and 6.4.3 (overfitting, "
              "dropout)")
    claim = ("A batch-normalized network generalizes better than the plain one (smaller gap "
             "between training and test accuracy), so that dropout can be removed or reduced: BN "
             "alone does about as well on the test set as the plain network with dropout.")
    quick_scale = 0.25

    def setup(self, data: Dataset, scale: float) -> str:
        epochs = scaled(EPOCHS, scale, 5)
        n = min(N_TRAIN, len(data.x_train))
        steps = max(1, n // BATCH)
        sizes = "-".join(map(str, (data.n_features, *HIDDEN, data.n_classes)))
        return (f"{sizes} ReLU MLP trained on the first {n} training images of "
                f"{data.describe()} (tiny on purpose, so that it overfits, as DLfS sec. 6.4.1); "
                f"four variants from identical He-normal weights and identical batches: plain, "
                f"dropout {DROPOUT} after every hidden ReLU, BatchNorm1d before every ReLU, and "
                f"BN + dropout; plain SGD lr {LR}, batch {BATCH} (shuffled epochs), {epochs} "
                f"epochs of {steps} steps (book: {EPOCHS}); training accuracy on those {n} "
                f"images and test accuracy on all test images, both in eval mode, at {N_EVALS} "
                f"points; 'final' = mean over the last 10% of them. (train loss: mean over the "
                f"last epoch before each point) Scaled down from the "
                f"paper's Inception to the textbook's MLP; the full size takes about a minute on "
                f"2 cores.")

    def runs(self, data: Dataset, scale: float) -> list[Run]:
        base = {"sizes": [data.n_features, *HIDDEN, data.n_classes], "batch": BATCH, "lr": LR,
                "epochs": scaled(EPOCHS, scale, 5), "n_train": min(N_TRAIN, len(data.x_train))}
        return [Run(key, {**base, "bn": bn, "dropout": p}, key)
                for key, (bn, p) in VARIANTS.items()]

    def run(self, ctx: RunContext, cfg: dict) -> dict:
        spec = regularized_spec(cfg["sizes"], cfg["bn"], cfg["dropout"])
        trainer = he_trainer(ctx.engine, spec, ctx.rng("init"), cfg["lr"])
        stream = derive_seed(ctx.seed, self.name, "batches")
        x, y = ctx.data.flat("train")
        x, y = x[:cfg["n_train"]], y[:cfg["n_train"]]
        x_te, y_te = ctx.data.flat("test")
        steps = max(1, len(x) // cfg["batch"])
        hist = {"epoch": [], "train_acc": [], "test_acc": [], "train_loss": []}
        every = max(1, cfg["epochs"] // N_EVALS)
        for epoch in range(cfg["epochs"]):
            losses = [trainer.train_step(x[idx], y[idx]) for idx in
                      (epoch_batch(stream, len(x), cfg["batch"], epoch * steps + s)
                       for s in range(steps))]
            if (epoch + 1) % every and epoch + 1 < cfg["epochs"]:
                continue
            hist["epoch"].append(epoch + 1)
            hist["train_loss"].append(float(np.mean(losses)))
            hist["train_acc"].append(evaluate(trainer, x, y)[0])
            hist["test_acc"].append(evaluate(trainer, x_te, y_te)[0])
            ctx.report(epoch + 1, cfg["epochs"])
        tail = max(1, len(hist["epoch"]) // 10)
        train, test = (float(np.mean(hist[k][-tail:])) for k in ("train_acc", "test_acc"))
        return {**hist, "final_train_acc": train, "final_test_acc": test, "gap": train - test}

    def summarize(self, runs: list[Run], metrics: dict[str, dict]) -> Summary:
        gap = {k: metrics[k]["gap"] for k in VARIANTS}
        test = {k: metrics[k]["final_test_acc"] for k in VARIANTS}
        narrowing = gap["plain"] - gap["bn"]
        vs_dropout = test["bn"] - test["dropout"]
        if narrowing >= NARROWS and vs_dropout >= -REPLACES:
            verdict = "holds"
        elif narrowing <= 0:
            verdict = "does not hold"
        else:
            verdict = "inconclusive"
        measured = {}
        for k in VARIANTS:
            measured[f"{k}: train / test accuracy"] = (
                f"{metrics[k]['final_train_acc']:.3f} / {test[k]:.3f}")
            measured[f"{k}: train-test gap"] = round(gap[k], 4)
        measured["gap narrowed by BN alone (plain - bn)"] = round(narrowing, 4)
        measured["dropout's gap narrowing (plain - dropout)"] = round(gap["plain"]
                                                                     - gap["dropout"], 4)
        measured["test accuracy, BN alone - plain with dropout"] = round(vs_dropout, 4)
        measured["test accuracy gained by adding dropout to BN"] = round(
            test["bn+dropout"] - test["bn"], 4)
        reason = (f"BN alone narrows the gap by {narrowing:.3f} ({gap['plain']:.3f} -> "
                  f"{gap['bn']:.3f}); its test accuracy is {vs_dropout:+.3f} vs the plain net "
                  f"with dropout")
        thresholds = (f"gap = final training accuracy - final test accuracy (eval mode, mean of "
                      f"the last 10% of evaluation points). Holds if BN alone narrows the plain "
                      f"net's gap by >= {NARROWS} and its test accuracy is >= that of the plain "
                      f"net with "
                      f"dropout - {REPLACES}; does not hold if BN does not narrow the gap at "
                      f"all; otherwise inconclusive.")
        rows = [{"epoch": epoch, **{f"{m}_{k}": metrics[k][m][i] for k in VARIANTS
                                    for m in ("train_acc", "test_acc", "train_loss")}}
                for i, epoch in enumerate(metrics["plain"]["epoch"])]
        return Summary(measured, verdict, reason, thresholds, rows)

    def figures(self, runs: list[Run], metrics: dict[str, dict], summary: Summary) -> dict:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
        colours = {"plain": "tab:gray", "dropout": "tab:orange", "bn": "tab:blue",
                   "bn+dropout": "tab:purple"}
        for k, colour in colours.items():
            m = metrics[k]
            epochs = m["epoch"]
            axes[0].plot(epochs, m["train_acc"], "--", color=colour, lw=1)
            axes[0].plot(epochs, m["test_acc"], color=colour, label=k)
        axes[0].set(xlabel="epoch", ylabel="accuracy (dashed: train, solid: test)",
                    ylim=(0, 1.02), title="Accuracy over training")
        axes[0].legend(loc="lower right", fontsize="small")
        keys = list(colours)
        x = np.arange(len(keys))
        axes[1].bar(x - 0.2, [metrics[k]["final_train_acc"] for k in keys], 0.4,
                    color="lightgray", label="train")
        axes[1].bar(x + 0.2, [metrics[k]["final_test_acc"] for k in keys], 0.4,
                    color=[colours[k] for k in keys], label="test")
        for i, k in enumerate(keys):
            axes[1].annotate(f"gap {metrics[k]['gap']:.3f}", (i, 0.05), ha="center",
                             fontsize="small")
        axes[1].set_xticks(x, keys)
        axes[1].set(ylabel="final accuracy", ylim=(0, 1.02), title="Train/test gap")
        axes[1].legend(loc="upper right", fontsize="small")
        return {"regularization": fig}
