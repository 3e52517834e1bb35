"""Ioffe & Szegedy 2015, sec. 3 (and notes 002, 004): BN's learnable scale gamma and shift beta.

"Normalizing the inputs of a sigmoid would constrain them to the linear regime of the
nonlinearity"; gamma and beta "restore the representation power of the network". Two copies of
the paper's sigmoid MLP with BN start from the same weights and see the same batches: one learns
gamma and beta (Alg. 1), the other holds them at 1 and 0 after every step (what
``affine=False`` computes). We measure the share of the last hidden layer's sigmoid inputs in
the near-linear range [-1, 1] (and [-2, 2]) on validation images over training, and the test
accuracy. The exact shares of a standard normal variable (68.27% within 1, 95.45% within 2,
99.73% within 3 standard deviations) are printed beside note 004's "66% / 99%".
"""

from __future__ import annotations

import math

import numpy as np

from ..data import Dataset
from ..engines.spec import last_index, mlp_spec
from ..runner.base import Experiment, Metrics, Run, RunContext, derive_seed
from ..runner.curve import eval_steps
from ..runner.evidence import Criterion, Published
from ..runner.holdout import parts
from ..runner.plots import BAND_NOTE, band, seeds_of
from ..runner.steps import Steps
from ..runner.testnoise import record
from ..runner.train import epoch_batch, evaluate, evaluate_correct

HIDDEN = (100, 100, 100)
STEPS = Steps(5_000, minimum=20)
BATCH = 60
LR = 0.5
INIT_STD = 0.01
N_EVALS = 20
ARMS = {"affine": "BN with learnable gamma, beta", "fixed": "BN, gamma = 1 and beta = 0 held"}
NORMAL_SHARES = {k: math.erf(k / math.sqrt(2.0)) for k in (1, 2, 3)}   # P(|Z| <= k)

LINEAR_FIXED = "final share of sigmoid inputs in [-1, 1], gamma/beta held"
LEFT = "final share in [-1, 1], held - learned"
ACC = "test accuracy, learned - held gamma/beta"


class Affine(Experiment):
    name = "affine"
    title = "BN's gamma and beta let a sigmoid leave its linear range (BN paper sec. 3)"
    source = ("Ioffe & Szegedy 2015, sec. 3 (the scale gamma and shift beta after the "
              "normalisation); notes 002 and 004")
    claim = ("Normalising a sigmoid's inputs confines most of them to its near-linear range "
             "around 0; the learned scale and shift gamma, beta let the network move them out "
             "of it (restoring the nonlinearity), and learning them does not cost accuracy.")
    quick_scale = 0.1
    same_at_paper = ("it is the paper's Fig. 1 network; the claim compares two versions of "
                     "its BN layers, not network sizes.")
    criteria = (
        Criterion("(a) without gamma/beta most sigmoid inputs are near-linear", LINEAR_FIXED,
                  0.5),
        Criterion("(b) learned gamma/beta move inputs out of the linear range", LEFT, 0.05),
        Criterion("(c) learning gamma/beta costs no accuracy", ACC, -0.01),
    )
    published = (
        Published("Ioffe & Szegedy 2015", "sec. 3",
                  "the sigmoid's linear regime and gamma, beta",
                  "\"normalizing the inputs of a sigmoid would constrain them to the linear "
                  "regime of the nonlinearity\"; gamma and beta \"restore the representation "
                  "power of the network\" (no number)",
                  "an argument (no experiment)", LEFT, qualitative=True,
                  comparable="our (b): how far learned gamma/beta move the inputs out of "
                             "[-1, 1]"),
        Published("note 004 (shared/seeds)", "\"-1~1 (66%), -2~2 (99%)\"",
                  "share of standardised values within 1 and 2 standard deviations",
                  "66% within 1, 99% within 2",
                  "a statement about normalised data; for a normal variable the shares are "
                  "68.27% / 95.45% / 99.73% within 1 / 2 / 3 standard deviations",
                  LINEAR_FIXED,
                  comparable="our sigmoid inputs with gamma/beta held are standardised but "
                             "not normal; 99% is the normal share within 2.58, not 2"),
    )
    definitions = (f"Shares: of all (validation image, last-hidden unit) sigmoid inputs, eval "
                   f"mode; 'final' = the mean over the last 20% of the evaluations. A standard "
                   f"normal variable has {100 * NORMAL_SHARES[1]:.2f}% within 1, "
                   f"{100 * NORMAL_SHARES[2]:.2f}% within 2 and {100 * NORMAL_SHARES[3]:.2f}% "
                   f"within 3 standard deviations (note 004: 66% and 99%). (c) compares test "
                   f"accuracies (paired over the same test set).")
    pilot_seeds = "seeds 100-102 (mnist5k and digits, quick size, 2026-12-07)"
    design_changes = ()

    def setup(self, data: Dataset, scale: float, size: str = "full") -> str:
        sizes = "-".join(map(str, (data.n_features, *HIDDEN, data.n_classes)))
        return (f"{sizes} MLP on {data.describe()}, Linear -> BatchNorm1d -> sigmoid (the "
                f"paper's Fig. 1 net), plain SGD lr {LR}, batch {BATCH}, "
                f"{STEPS.at(scale):,} steps, weights N(0, {INIT_STD}^2), biases 0; "
                f"one arm learns every BN's gamma and beta, the other resets them to 1 and 0 "
                f"after every step; same weights and batches. Sigmoid inputs of the last "
                f"hidden layer on the validation set (eval mode) at {N_EVALS} points; test "
                f"accuracy once at the end.")

    def scale_note(self, data: Dataset, scale: float, size: str = "full") -> str:
        return f"the paper's sigmoid MLP, {STEPS.at(scale):,} steps of {BATCH}"

    def runs(self, data: Dataset, scale: float, size: str = "full") -> list[Run]:
        steps = STEPS.at(scale)
        base = {"steps": steps, "batch": BATCH, "lr": LR,
                "evals": eval_steps(steps, N_EVALS, early=1),
                "sizes": [data.n_features, *HIDDEN, data.n_classes]}
        return [Run(k, {**base, "learn": k == "affine"}, label) for k, label in ARMS.items()]

    def run(self, ctx: RunContext, cfg: dict) -> dict:
        spec = mlp_spec(cfg["sizes"], "sigmoid", True)
        tap = last_index(spec, "sigmoid")
        trainer = ctx.trainer(spec, INIT_STD, ctx.rng("init"), cfg["lr"], distributed=False)
        slots = affine_slots([a.shape for a in trainer.parameter_arrays()])
        p = parts(ctx.data)
        (x, y), (x_va, y_va) = p.train.flat(), p.val.flat()
        stream = derive_seed(ctx.seed, self.name, "batches")
        at = set(cfg["evals"])
        hist = {"step": [], "val_acc": [], "within1": [], "within2": [], "within3": []}

        def look(step: int) -> None:
            acc, z = evaluate(trainer, x_va, y_va, tap)
            hist["step"].append(step)
            hist["val_acc"].append(acc)
            for k in (1, 2, 3):
                hist[f"within{k}"].append(float(np.mean(np.abs(z) <= k)))

        if 0 in at:
            look(0)
        for step in range(cfg["steps"]):
            idx = epoch_batch(stream, len(x), cfg["batch"], step)
            trainer.train_step(x[idx], y[idx])
            if not learnable(cfg):
                reset_affine(trainer, slots)
            if step + 1 in at:
                look(step + 1)
            if (step + 1) % 50 == 0:
                ctx.report(step + 1, cfg["steps"])
        out = {**hist, "gamma_mean": [float(np.mean(trainer.parameter_arrays()[i]))
                                      for i in slots[::2]]}
        out["test_acc"] = record(out, "test_acc", evaluate_correct(trainer, *p.test.flat()))
        return out

    def statistics(self, runs: list[Run], metrics: Metrics) -> dict[str, float]:
        def final(key: str, arm: str) -> float:
            v = metrics[arm][key]
            return float(np.mean(v[-max(1, len(v) // 5):]))

        out = {LINEAR_FIXED: final("within1", "fixed"),
               LEFT: final("within1", "fixed") - final("within1", "affine"),
               ACC: metrics["affine"]["test_acc"] - metrics["fixed"]["test_acc"]}
        for arm in ARMS:
            out[f"final share in [-1, 1], {ARMS[arm]}"] = final("within1", arm)
            out[f"final share in [-2, 2], {ARMS[arm]}"] = final("within2", arm)
            out[f"test accuracy, {ARMS[arm]}"] = metrics[arm]["test_acc"]
        return out

    def describe(self, runs, by_seed) -> dict:
        return {"standard normal: share within 1 / 2 / 3 std (note 004: 66% / 99%)":
                " / ".join(f"{100 * NORMAL_SHARES[k]:.2f}%" for k in (1, 2, 3))}

    def rows(self, runs: list[Run], metrics: Metrics) -> list[dict]:
        return [{"step": s, **{f"{k}_{arm}": metrics[arm][k][i] for arm in ARMS
                               for k in ("val_acc", "within1", "within2")}}
                for i, s in enumerate(metrics["fixed"]["step"])]

    def figures(self, runs, by_seed, summary) -> dict:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
        steps = by_seed[min(by_seed)]["fixed"]["step"]
        ax = axes[0]
        for arm, color in zip(ARMS, ("tab:blue", "tab:orange"), strict=True):
            band(ax, steps, seeds_of(by_seed, arm, "within1"), "-", f"{ARMS[arm]}: [-1, 1]",
                 color=color)
            band(ax, steps, seeds_of(by_seed, arm, "within2"), "--", f"{ARMS[arm]}: [-2, 2]",
                 color=color)
        for k, style in ((1, ":"), (2, "-.")):
            ax.axhline(NORMAL_SHARES[k], color="gray", lw=0.8, ls=style,
                       label=f"normal: {100 * NORMAL_SHARES[k]:.1f}% within {k}")
        ax.set(xlabel="training step", ylabel="share of sigmoid inputs", ylim=(0, 1.02),
               title="Last hidden layer's sigmoid inputs in the near-linear range")
        ax.legend(fontsize="x-small", loc="lower left")
        ax = axes[1]
        for arm in ARMS:
            band(ax, steps, seeds_of(by_seed, arm, "val_acc"), "-", ARMS[arm])
        ax.set(xlabel="training step", ylabel="validation accuracy", title="Accuracy")
        ax.legend(fontsize="small", loc="lower right")
        fig.suptitle(BAND_NOTE, fontsize="small")
        return {"affine": fig}


def learnable(cfg: dict) -> bool:
    """Whether this arm learns gamma and beta (the mechanism under test)."""
    return bool(cfg["learn"])


def affine_slots(shapes: list[tuple]) -> list[int]:
    """Positions, in ``parameters()`` order, of every BN's (gamma, beta): the two vectors after
    a Linear's (weight matrix, bias vector)."""
    out = []
    for i in range(len(shapes) - 3):
        if len(shapes[i]) == 2 and all(len(s) == 1 for s in shapes[i + 1:i + 4]):
            out += [i + 2, i + 3]
    return out


def reset_affine(trainer, slots: list[int]) -> None:
    params = trainer.parameter_arrays()
    for j, i in enumerate(slots):
        params[i] = np.full_like(params[i], 1.0 if j % 2 == 0 else 0.0)
    trainer.load_parameter_arrays(params)
