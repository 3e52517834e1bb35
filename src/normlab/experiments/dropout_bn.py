"""Li, Chen, Hu & Yang, CVPR 2019: the "variance shift" between dropout and BN (note 003).

Inverted dropout with retain probability ``1 - p`` scales the kept units by ``1 / (1 - p)``, so
in training a unit after it has a larger variance than at test time, when dropout is off. A BN
layer after the dropout keeps the training variance as its running variance and, at test time,
normalises inputs whose variance is smaller: the variance shift. Dropout after the last BN layer
has no BN to mislead. The same ReLU MLP with one dropout layer of rate p in 0.1, 0.3, 0.5, placed
before the second BN ("before") or after the last BN ("after"), from the same weights on the
same batches; plus the source's remedy (dropout after every BN) and normlab's: re-estimating the
shifted BN layer's statistics in eval mode (dropout off) after training.
"""

from __future__ import annotations

import numpy as np

from ..data import Dataset
from ..engines.spec import Spec
from ..runner.base import Experiment, Metrics, Run, RunContext, derive_seed
from ..runner.curve import eval_steps, train_curve
from ..runner.evidence import Criterion, Published
from ..runner.holdout import parts
from ..runner.plots import bars
from ..runner.steps import Steps
from ..runner.testnoise import record
from ..runner.train import evaluate, evaluate_correct

HIDDEN = 100
STEPS = Steps(3_000, minimum=20)
BATCH = 60
LR = 0.1
RATES = (0.1, 0.3, 0.5)
EPS = 1e-5
N_EVALS = 10
SHIFTED = 5            # spec index of the BN layer after the dropout in the "before" arm

TOP = RATES[-1]
SHIFT = f"p = {TOP}: test-time input variance / running variance of the BN after dropout"
COST = f"p = {TOP}: test accuracy, dropout after the last BN - before a BN"
RECAL = f"p = {TOP}, dropout before a BN: test accuracy, recalibrated - as trained"


def _shift(p: float) -> str:
    return f"p = {p}: variance shift ratio (test / running), dropout before a BN"


class DropoutBN(Experiment):
    name = "dropout-bn"
    title = "Dropout before BN shifts its variance at test time (Li et al., CVPR 2019)"
    source = ("Li, Chen, Hu & Yang, \"Understanding the Disharmony between Dropout and Batch "
              "Normalization by Variance Shift\", CVPR 2019 (arXiv:1801.05134); note 003")
    claim = ("Dropout before a BN layer makes BN's running variance (accumulated with dropout "
             "on) larger than the variance it sees at test time (dropout off), which costs "
             "accuracy; dropout after the last BN avoids it, and re-estimating the BN "
             "statistics with dropout off repairs a trained net.")
    quick_scale = 0.1
    same_at_paper = ("the variance shift is a property of one dropout -> BN pair; a small "
                     "MLP has it as a DenseNet does.")
    criteria = (
        Criterion(f"(a) the variance shifts (p = {TOP})", SHIFT, 0.9, "<="),
        Criterion(f"(b) dropout after the last BN is more accurate (p = {TOP})", COST, 0.0),
        Criterion(f"(c) recalibration recovers accuracy (p = {TOP})", RECAL, 0.0),
    )
    published = (
        Published("Li, Chen, Hu & Yang 2019 (arXiv:1801.05134v1)", "Fig. 1",
                  "variance of a unit after dropout (retain probability p) in train and test "
                  "mode; DenseNet test accuracy on CIFAR-100 with and without dropout",
                  "\"Var_Train(X) = 1/p\", \"Var_Test(X) = 1\"; \"Test Acc 77.42%, No Dropout "
                  "in each bottleneck\", \"Test Acc 68.55%, Dropout 0.5 in each bottleneck\"",
                  "DenseNet on CIFAR-100, dropout 0.5 before every BN of the bottlenecks",
                  SHIFT,
                  comparable="their 1/p is for a unit right after dropout (test / train = p "
                             "= 0.5 at rate 0.5); ours is one Linear later, so it is nearer 1 "
                             "than 1 - rate; their accuracy cost (-8.87 points) is for dropout "
                             "before every BN of a 100-layer net, ours for one layer"),
    )
    definitions = ("Shift ratio: per unit of the BN layer after the dropout, the variance of "
                   "its input on the validation images in eval mode (dropout off) over its "
                   "running variance; the median over units. Recalibration: that BN layer's "
                   "running mean and variance replaced by the mean and unbiased variance of "
                   "its eval-mode input over the training images (dropout off); weights "
                   "unchanged. Test accuracies are paired on one test set.")
    pilot_seeds = "seeds 100-102 (mnist5k and digits, quick size, 2026-12-07)"
    design_changes = ()

    def setup(self, data: Dataset, scale: float, size: str = "full") -> str:
        return (f"{data.n_features}-{HIDDEN}-{HIDDEN}-{data.n_classes} MLP on "
                f"{data.describe()}, Linear -> BatchNorm1d -> ReLU per hidden layer, He-normal "
                f"weights, plain SGD lr {LR}, batch {BATCH}, {STEPS.at(scale):,} "
                f"steps; one inverted-dropout layer of rate p in {RATES} either between the "
                f"hidden layers (before the second BN) or after the last BN (before the output "
                f"layer), and a net without dropout; all from the same weights on the same "
                f"batches. Test accuracy once at the end, and again after recalibration.")

    def scale_note(self, data: Dataset, scale: float, size: str = "full") -> str:
        return f"a 2-hidden-layer ReLU MLP, {STEPS.at(scale):,} steps of {BATCH}"

    def runs(self, data: Dataset, scale: float, size: str = "full") -> list[Run]:
        steps = STEPS.at(scale)
        base = {"steps": steps, "batch": BATCH, "lr": LR,
                "evals": eval_steps(steps, N_EVALS, early=1),
                "sizes": [data.n_features, HIDDEN, HIDDEN, data.n_classes]}
        out = [Run("none", {**base, "where": "none", "p": 0.0}, "no dropout")]
        out += [Run(f"{where}-p{p}", {**base, "where": where, "p": p},
                    f"dropout {p} {where} {'a BN' if where == 'before' else 'the last BN'}")
                for p in RATES for where in ("before", "after")]
        return out

    def run(self, ctx: RunContext, cfg: dict) -> dict:
        spec = dropout_spec(cfg["sizes"], cfg["where"], cfg["p"])
        trainer = ctx.trainer(spec, "he", ctx.rng("init"), cfg["lr"], distributed=False)
        p = parts(ctx.data)
        (x, _), (x_va, _), test = p.train.flat(), p.val.flat(), p.test.flat()
        out = train_curve(ctx, trainer, p.train.flat(), p.val.flat(), test,
                          steps=cfg["steps"], batch=cfg["batch"], evals=cfg["evals"],
                          stream=derive_seed(ctx.seed, self.name, "batches"))
        layer = SHIFTED if cfg["where"] == "before" else SHIFTED - 1
        running = trainer.bn_buffers()[1]
        seen = evaluate(trainer, x_va, p.val.y, layer)[1].astype(np.float64)
        ratio = seen.var(axis=0) / np.maximum(np.asarray(running["running_var"]), 1e-12) \
            if "running_var" in running else np.full(seen.shape[1], np.nan)
        out["shift_ratio"] = float(np.median(ratio))
        recalibrate_from_eval(trainer, x, layer)
        out["recal_acc"] = record(out, "recal_acc", evaluate_correct(trainer, *test))
        return out

    def statistics(self, runs: list[Run], metrics: Metrics) -> dict[str, float]:
        top_b, top_a = metrics[f"before-p{TOP}"], metrics[f"after-p{TOP}"]
        out = {SHIFT: top_b["shift_ratio"], COST: top_a["test_acc"] - top_b["test_acc"],
               RECAL: top_b["recal_acc"] - top_b["test_acc"],
               "test accuracy, no dropout": metrics["none"]["test_acc"]}
        for p in RATES:
            out[_shift(p)] = metrics[f"before-p{p}"]["shift_ratio"]
            out[f"p = {p}: variance shift ratio, dropout after the last BN"] = \
                metrics[f"after-p{p}"]["shift_ratio"]
            for where in ("before", "after"):
                out[f"p = {p}: test accuracy, dropout {where}"] = \
                    metrics[f"{where}-p{p}"]["test_acc"]
            out[f"p = {p}: test accuracy, dropout before, recalibrated"] = \
                metrics[f"before-p{p}"]["recal_acc"]
        return out

    def rows(self, runs: list[Run], metrics: Metrics) -> list[dict]:
        return [{"run": k, "shift_ratio": m["shift_ratio"], "test_acc": m["test_acc"],
                 "recal_acc": m["recal_acc"]} for k, m in metrics.items()]

    def figures(self, runs, by_seed, summary) -> dict:
        import matplotlib.pyplot as plt

        seeds = sorted(by_seed)
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
        ax = axes[0]
        for where, style in (("before", "o-"), ("after", "s--")):
            v = np.asarray([[by_seed[s][f"{where}-p{p}"]["shift_ratio"] for p in RATES]
                            for s in seeds])
            ax.plot(RATES, v.mean(axis=0), style, label=f"dropout {where} "
                    f"{'a BN' if where == 'before' else 'the last BN'}")
        ax.plot(RATES, [1 - p for p in RATES], ":", color="gray",
                label="1 - p (a unit right after dropout)")
        ax.axhline(1.0, color="black", lw=0.6)
        ax.set(xlabel="dropout rate p", ylabel="test variance / running variance",
               title="Variance shift of the BN after the dropout (mean over seeds)")
        ax.legend(fontsize="x-small")
        ax = axes[1]
        keys = ["none"] + [f"{w}-p{p}" for p in RATES for w in ("before", "after")]
        vals = [[by_seed[s][k]["test_acc"] for k in keys] +
                [by_seed[s][f"before-p{TOP}"]["recal_acc"]] for s in seeds]
        labels = ["none"] + [f"{w[0]}{p}" for p in RATES for w in ("before", "after")] + \
            [f"b{TOP}+recal"]
        bars(ax, vals, ["gray"] + ["tab:red", "tab:blue"] * len(RATES) + ["tab:green"], labels)
        lo = min(min(v) for v in vals)
        ax.set(ylabel="test accuracy", ylim=(max(0.0, lo - 0.05), 1.0),
               title="b = before a BN, a = after the last BN (whiskers: min-max over seeds)")
        return {"dropout_bn": fig}


def dropout_spec(sizes: list[int], where: str, p: float) -> Spec:
    """Linear -> BN -> ReLU twice, then Linear; one Dropout(p) before the second Linear
    ("before": its BN is at :data:`SHIFTED`) or before the output Linear ("after")."""
    if where not in ("none", "before", "after"):
        raise ValueError(f"where: expected 'none', 'before' or 'after', got {where!r}")
    n_in, h1, h2, n_out = sizes
    drop = [("dropout", p)]
    return (("linear", n_in, h1), ("bn1d", h1, EPS), ("relu",),
            *(drop if where == "before" else []),
            ("linear", h1, h2), ("bn1d", h2, EPS), ("relu",),
            *(drop if where == "after" else []),
            ("linear", h2, n_out))


def recalibrate_from_eval(trainer, x: np.ndarray, layer: int) -> None:
    """Replace the running mean and variance of the BN layer at spec index ``layer`` by the mean
    and unbiased variance of its eval-mode input (dropout off) over ``x``; nothing else moves."""
    seen = evaluate(trainer, x, np.zeros(len(x), dtype=np.int64), layer)[1].astype(np.float64)
    state = trainer.state()
    key = f"model.{layer}."
    if key + "running_mean" not in state:
        return                                  # no BN there (the mechanism test removes it)
    state[key + "running_mean"] = seen.mean(axis=0).astype(state[key + "running_mean"].dtype)
    state[key + "running_var"] = seen.var(axis=0, ddof=1).astype(state[key + "running_var"].dtype)
    trainer.load_state(state)
