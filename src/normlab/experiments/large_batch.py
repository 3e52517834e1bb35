"""The large-batch generalisation gap and ghost BN (Keskar et al. 2017; Hoffer, Hubara & Soudry
2017, "Train longer, generalize better"; note 000: "too large a batch does not work well").

Keskar et al. report that a large batch generalises worse than a small one (their
"generalization gap"; their code trains C1-C4 with batches of 256 vs 5,000 CIFAR images, 10% of
the 50,000 training images). Hoffer et al. argue the gap comes from the large batch's fewer
updates, and close it in steps: the learning rate scaled by the square root of the batch ratio
("+LR"), ghost batch normalisation -- BN statistics over "ghost" groups of the small batch's
size inside the large batch ("+GBN") -- and "regime adaptation": as many updates as the small
batch, i.e. the epochs multiplied by the batch ratio ("+RA"); the rules are their code's
(``--lr_bb_fix``, ``--regime_bb_fix``).

Here the same BN MLP, from the same weights, in the five arms of their table: the small batch;
the large batch for the same number of epochs (so 1/ratio of the updates) at the small batch's
rate; +LR; +LR+GBN; +LR+GBN+RA. Every run decays its rate to 0 with a cosine over its own
steps, so regime adaptation stretches the schedule as their ``--regime_bb_fix`` does.

Data: mnist5k is enough, so Fashion-MNIST is not needed. A batch of 512 is 14% of its 3,600
training images, about Keskar et al.'s large batch (10% of the training set). That is 7 updates
per epoch, and in the pilot it lost 6 points to the small batch.
"""

from __future__ import annotations

import math

from ..data import Dataset
from ..engines.spec import Spec
from ..runner.base import Experiment, Metrics, Run, RunContext, derive_seed
from ..runner.curve import eval_steps, final_accuracy, train_curve
from ..runner.design import DesignChange
from ..runner.evidence import Criterion, Published
from ..runner.holdout import parts
from ..runner.plots import BAND_NOTE, band, bars
from ..runner.steps import Steps

HIDDEN = (128, 128)
SMALL = 32                 # the small batch, and the ghost group size
LARGE = 512                # 16x: ~14% of mnist5k's training part (Keskar: 5,000 of 50,000)
LR = 0.1                   # the small batch's rate (plain SGD, cosine decay to 0)
EPOCHS = 10                # of the small batch (and of every arm but +RA) at full size
N_EVALS = 10
MIN_GAP = 0.005            # below this gap, "share recovered" is undefined (no verdict)
GBN_BAR = 0.005            # (b): half a point (5 of 1,000 test images); 0 is met by no effect
RATIO = LARGE // SMALL
ARMS = ("sb", "lb", "lb-lr", "lb-lr-gbn", "lb-lr-gbn-ra")
LABELS = {"sb": f"small batch ({SMALL})", "lb": f"large batch ({LARGE})",
          "lb-lr": "+LR (sqrt scaling)", "lb-lr-gbn": f"+GBN (ghost groups of {SMALL})",
          "lb-lr-gbn-ra": "+RA (as many steps as the small batch)"}
COLORS = dict(zip(ARMS, ("tab:blue", "tab:red", "tab:orange", "tab:green", "tab:purple"),
                  strict=True))

GAP = "test accuracy, small batch - large batch (same epochs, same rate)"
GBN = "test accuracy, +LR+GBN - +LR (large batch, same steps)"
RECOVERED = "share of the gap recovered by +LR+GBN+RA"
LR_GAIN = "test accuracy, +LR - large batch"
RA_LEFT = "test accuracy, small batch - (+LR+GBN+RA)"


def arm_config(arm: str, sb_steps: int) -> dict:
    """Batch, rate, steps and ghost group of one arm of Hoffer et al.'s Table 1."""
    if arm not in ARMS:
        raise ValueError(f"arm: expected one of {ARMS}, got {arm!r}")
    if arm == "sb":
        return {"batch": SMALL, "lr": LR, "steps": sb_steps, "ghost": None}
    steps = sb_steps if arm.endswith("-ra") else max(1, round(sb_steps / RATIO))
    return {"batch": LARGE, "lr": LR * math.sqrt(RATIO) if "-lr" in arm else LR,
            "steps": steps, "ghost": SMALL if "-gbn" in arm else None}


def large_batch_spec(sizes: list[int], ghost: int | None) -> Spec:
    """Linear -> BN (ghost groups of ``ghost`` images, or the whole batch) -> ReLU per hidden
    layer, then a Linear output."""
    layers: list[tuple] = []
    for n_in, n_out in zip(sizes[:-2], sizes[1:-1], strict=True):
        layers += [("linear", n_in, n_out), ("norm1d", "batch", n_out, None, ghost), ("relu",)]
    layers.append(("linear", sizes[-2], sizes[-1]))
    return tuple(layers)


class LargeBatch(Experiment):
    name = "large-batch"
    title = "A large batch generalises worse; ghost BN and training longer recover it"
    source = ("Hoffer, Hubara & Soudry 2017, \"Train longer, generalize better\" (NIPS 2017, "
              "arXiv:1705.08741) and the authors' code (eladhoffer/bigBatch); Keskar et al. "
              "2017 (ICLR, arXiv:1609.04836); note 000")
    claim = ("Trained for the same number of epochs, a large batch reaches a lower test accuracy "
             "than a small one; ghost batch normalisation (BN statistics over groups of the "
             "small batch's size) improves the large batch at the same number of updates, and "
             "with the square-root rate and as many updates as the small batch it recovers at "
             "least half of the gap.")
    quick_scale = 0.2
    same_at_paper = ("the claim is about the ratio of batch sizes on one data set, which the "
                     "full size already has (16x, the large batch 14% of the training images).")
    criteria = (
        Criterion(f"(a) the large batch loses >= 1 point ({LARGE} vs {SMALL}, same epochs)",
                  GAP, 0.01),
        Criterion("(b) ghost BN helps the large batch at the same steps (>= 0.5 point)", GBN,
                  GBN_BAR),
        Criterion("(c) +LR+GBN+RA recovers at least half of the gap", RECOVERED, 0.5),
    )
    published = (
        Published("Hoffer, Hubara & Soudry 2017 (arXiv:1705.08741)", "Table 1",
                  "validation accuracy: small batch, large batch, +LR, +GBN, +RA",
                  "not quoted: not found in the stored sources (the search tool's pages, docs "
                  "and code corpora hold the abstract and the authors' code, not the table)",
                  "MNIST, CIFAR-10, CIFAR-100 and ImageNet (abstract); the authors' commands "
                  "train mnist_f1 on MNIST with batch 4096 and ghost groups of 128, ResNet44 on "
                  "CIFAR-10 with batch 2048",
                  GAP, qualitative=True),
        Published("Hoffer, Hubara & Soudry 2017, the authors' code (github.com/eladhoffer/"
                  "bigBatch, main_gbn.py and README)", "--lr_bb_fix, --regime_bb_fix, the MNIST "
                  "command",
                  "the rate and regime rules",
                  "\"learning rate fix for big batch lr =  lr0*(batch_size/128)**0.5\"; "
                  "\"regime fix for big batch e = e0*(batch_size/128)\"; MNIST: \"--model "
                  "mnist_f1 --dataset mnist ... --epochs 50 --b 4096 --lr_bb_fix "
                  "--no-regime_bb_fix --mini-batch-size 128\"",
                  "mnist_f1 on MNIST, batch 4096, ghost groups of 128, 50 epochs", GBN,
                  qualitative=True,
                  comparable=f"ours: ratio {RATIO} ({LARGE} / {SMALL}) on mnist5k instead of "
                             f"32 (4096 / 128) on MNIST; the same sqrt rate rule and epoch "
                             f"multiplication"),
        Published("Hoffer, Hubara & Soudry 2017", "abstract",
                  "ghost BN and regime adaptation",
                  "\"the generalization gap stems from the relatively small number of updates "
                  "rather than the batch size, and can be completely eliminated by adapting "
                  "the training regime used\"; Ghost Batch Normalization \"enables significant "
                  "decrease in the generalization gap without increasing the number of "
                  "updates\"", "MNIST, CIFAR-10, CIFAR-100 and ImageNet", RECOVERED,
                  qualitative=True,
                  comparable="they claim the whole gap closes; our bar asks for half"),
        Published("Keskar et al. 2017 (arXiv:1609.04836)", "abstract",
                  "the generalization gap", "\"when using a larger batch there is a "
                  "degradation in the quality of the model, as measured by its ability to "
                  "generalize\" (small batch: \"say 32-512 data points\"); their Table 2 with "
                  "per-network numbers was not found in the stored sources, so it is not "
                  "quoted", "MNIST, TIMIT, CIFAR-10, CIFAR-100; the authors' code (keskarnitish/"
                  "large-batch-training README): \"train the networks C1 - C4 using a batch "
                  "size of 256 (for SB) and using 5000 (for LB)\"", GAP, qualitative=True,
                  comparable=f"ours: {SMALL} vs {LARGE} (16x; {LARGE} is ~14% of mnist5k's "
                             f"training part), theirs 256 vs 5,000 (~20x, 10% of CIFAR's)"),
    )
    definitions = (f"Test accuracy once, after each run's last step (eval mode: running "
                   f"statistics), paired on one test set. Share recovered = (+LR+GBN+RA - "
                   f"large batch) / (small batch - large batch), undefined (no verdict) when "
                   f"the gap is below {MIN_GAP}. +LR: rate x sqrt({RATIO}); +RA: the small "
                   f"batch's number of steps ({RATIO}x the epochs).")
    pilot_seeds = ("seeds 100-102 (mnist5k, quick and full size, 2026-12-07; the design and the "
                   "bars of (a) and (c) were written before it). Pilot, full size: (a) 0.062 "
                   "[0.052, 0.071], (b) 0.002 [-0.007, 0.012], (c) 0.903 [0.796, 1.009]; quick: "
                   "(a) 0.188, (b) -0.001, (c) 1.053")
    design_changes = (
        DesignChange("(b)'s bar raised from >= 0 to >= 0.005 (half a point)",
                     "2026-12-07, after the pilot seeds 100-102 (full size: +GBN - +LR = 0.002 "
                     "[-0.007, 0.012]) and the mechanism test (CI seeds, digits)",
                     "with the ghost groups removed the +GBN and +LR runs are identical, and a "
                     "difference of exactly 0 on every seed meets a bar of '>= 0' (the sign "
                     "test counts ties as meeting it); 'helps' needs a positive effect. The "
                     "raise makes (b) harder to meet, not easier; nothing else changed"),
    )

    def sb_steps(self, data: Dataset, scale: float) -> int:
        """The small batch's steps: :data:`EPOCHS` epochs of the training part, scaled."""
        n_train = len(parts(data).train)
        return Steps(round(EPOCHS * n_train / SMALL), minimum=20).at(scale)

    def setup(self, data: Dataset, scale: float, size: str = "full") -> str:
        sizes = "-".join(map(str, (data.n_features, *HIDDEN, data.n_classes)))
        sb = self.sb_steps(data, scale)
        lb = arm_config("lb", sb)["steps"]
        n_train = len(parts(data).train)
        return (f"{sizes} MLP on {data.describe()} ({n_train:,} training images after the "
                f"validation split, so the large batch is {100 * LARGE / n_train:.0f}% of them; "
                f"Keskar et al.'s was 10%), Linear -> BatchNorm1d -> ReLU per hidden "
                f"layer, He-normal weights, plain SGD with a cosine decay to 0 over each run. "
                f"Small batch {SMALL}, lr {LR}, {sb:,} steps; large batch {LARGE} for the same "
                f"epochs ({lb:,} steps) at lr {LR}; +LR: lr {LR * math.sqrt(RATIO):g} (x sqrt("
                f"{RATIO})); +GBN: BN statistics over ghost groups of {SMALL} (the running "
                f"statistics take one update per step from the groups' pooled mean and "
                f"unbiased variance); +RA: {sb:,} steps of {LARGE}. Every arm starts from the "
                f"same weights and reads the same sample order. Validation accuracy at "
                f"{N_EVALS} points, test accuracy once at the end.")

    def scale_note(self, data: Dataset, scale: float, size: str = "full") -> str:
        return (f"784-128-128-10 BN MLP, batch {SMALL} vs {LARGE}, "
                f"{self.sb_steps(data, scale):,} small-batch steps")

    def runs(self, data: Dataset, scale: float, size: str = "full") -> list[Run]:
        sb = self.sb_steps(data, scale)
        out = []
        for arm in ARMS:
            cfg = {**arm_config(arm, sb), "sizes": [data.n_features, *HIDDEN, data.n_classes]}
            cfg["evals"] = eval_steps(cfg["steps"], N_EVALS)
            out.append(Run(arm, cfg, LABELS[arm]))
        return out

    def run(self, ctx: RunContext, cfg: dict) -> dict:
        spec = large_batch_spec(cfg["sizes"], cfg["ghost"])
        trainer = ctx.trainer(spec, "he", ctx.rng("init"), cfg["lr"], split=False)
        p = parts(ctx.data)
        steps, lr = cfg["steps"], cfg["lr"]
        return train_curve(ctx, trainer, p.train.flat(), p.val.flat(), p.test.flat(),
                           steps=steps, batch=cfg["batch"], evals=cfg["evals"],
                           stream=derive_seed(ctx.seed, self.name, "batches"),
                           lr_at=lambda s: lr * (1 + math.cos(math.pi * s / steps)) / 2)

    def statistics(self, runs: list[Run], metrics: Metrics) -> dict[str, float]:
        acc = {a: metrics[a]["test_acc"] for a in ARMS}
        gap = acc["sb"] - acc["lb"]
        share = (acc["lb-lr-gbn-ra"] - acc["lb"]) / gap if gap >= MIN_GAP else float("nan")
        return {GAP: gap, GBN: acc["lb-lr-gbn"] - acc["lb-lr"], RECOVERED: share,
                LR_GAIN: acc["lb-lr"] - acc["lb"], RA_LEFT: acc["sb"] - acc["lb-lr-gbn-ra"],
                **{f"test accuracy, {LABELS[a]}": acc[a] for a in ARMS},
                **{f"final validation accuracy, {LABELS[a]}":
                   final_accuracy(metrics[a]["val_acc"]) for a in ARMS}}

    def rows(self, runs: list[Run], metrics: Metrics) -> list[dict]:
        return [{"arm": a, "steps": metrics[a]["step"][-1], "test_acc": metrics[a]["test_acc"]}
                for a in ARMS]

    def figures(self, runs, by_seed, summary) -> dict:
        import matplotlib.pyplot as plt

        seeds = sorted(by_seed)
        cfg = {r.key: r.config for r in runs}
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
        ax = axes[0]
        for arm, style in zip(ARMS, ("-", "--", "-.", ":", "-"), strict=True):
            seen = [s * cfg[arm]["batch"] for s in by_seed[seeds[0]][arm]["step"]]
            band(ax, seen, [by_seed[s][arm]["val_acc"] for s in seeds], style, LABELS[arm],
                 color=COLORS[arm])
        ax.set_xscale("symlog", linthresh=cfg["sb"]["batch"])
        ax.set(xlabel="images seen (log scale)", ylabel="validation accuracy",
               title="Validation accuracy")
        ax.legend(fontsize="x-small", loc="lower right")
        ax = axes[1]
        vals = [[by_seed[s][a]["test_acc"] for a in ARMS] for s in seeds]
        bars(ax, vals, [COLORS[a] for a in ARMS], ["SB", "LB", "+LR", "+GBN", "+RA"])
        lo = min(min(v) for v in vals)
        ax.set(ylabel="test accuracy", ylim=(max(0.0, lo - 0.03), 1.0),
               title="Hoffer et al.'s Table 1 rows, measured here")
        fig.suptitle(f"{BAND_NOTE}; whiskers: min-max over seeds", fontsize="small")
        return {"large_batch": fig}
