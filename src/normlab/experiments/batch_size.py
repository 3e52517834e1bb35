"""Wu & He 2018 (Group Normalization), Fig. 1: error vs batch size per normalization family.

The same small CNN (:mod:`.cnn`) with BatchNorm, GroupNorm, LayerNorm, InstanceNorm, Batch
Renorm (Ioffe 2017) or no norm, trained at per-batch sizes 2..64 with the learning rate scaled
linearly, every run seeing the same number of training samples; test error in eval mode (BN and
Batch Renorm with their running statistics).
"""

from __future__ import annotations

from ..data import Dataset
from .base import Experiment, Run, RunContext, Summary, derive_seed, scaled
from .cnn import as_images, cnn_spec, group_count, image_shape
from .curve import eval_steps, train_curve
from .train import make_trainer

METHODS = ("batch", "group", "layer", "instance", "renorm", "none")
LABELS = {"batch": "BatchNorm", "group": "GroupNorm", "layer": "LayerNorm",
          "instance": "InstanceNorm", "renorm": "Batch Renorm", "none": "no norm"}
BATCHES = (2, 4, 8, 16, 32, 64)
BASE_LR, BASE_BATCH = 0.1, 32      # lr = 0.1 * batch / 32 (linear scaling, GN paper sec. 4)
SAMPLES = 8_000                    # training samples seen by every run (2 epochs of mnist5k)
INIT_STD = 0.01                    # classifier Linear weights
N_EVALS = 4
# Batch Renorm schedule (Ioffe 2017 sec. 4): r_max 3, d_max 5, plain BN for 5k steps, r_max
# reached at 40k and d_max at 25k; every step count is multiplied by (run steps / 80k), so the
# ramps end half-way through each run whatever its batch size.
RENORM = (3.0, 5.0, 5_000, 40_000, 25_000)
RENORM_PAPER_STEPS = 80_000

# Verdict rules (fixed before any run); Delta = error(batch 2) - error(batch 32):
BN_DEGRADES = 0.02     # (a) holds if Delta_BN >= 2 points; does not hold if < 0.5 points
BN_FLAT_NONE = 0.005
FLAT_FRACTION = 0.5    # (b) holds if Delta_GN and Delta_LN <= 0.5 Delta_BN; fails if >= Delta_BN
RECOVER_FRACTION = 0.25  # (c) holds if renorm recovers >= 25% of Delta_BN at batch 2
# Published (GN paper Fig. 1 / Table 1, ResNet-50 ImageNet top-1 error, images per GPU):
PAPER = {"batch": {32: 23.6, 16: 23.7, 8: 24.8, 4: 27.3, 2: 34.7},
         "group": {32: 24.1, 16: 24.2, 8: 24.0, 4: 24.2, 2: 24.1},
         "layer": {32: 25.3}, "instance": {32: 28.4}}


def renorm_schedule(steps: int) -> list:
    r_max, d_max, warmup, r_at, d_at = RENORM
    f = steps / RENORM_PAPER_STEPS
    return [r_max, d_max, round(warmup * f), round(r_at * f), round(d_at * f)]


class BatchSize(Experiment):
    name = "batch-size"
    title = "BN degrades at small batches, GroupNorm does not (Wu & He 2018, Fig. 1)"
    source = ("Wu & He 2018, Group Normalization, Fig. 1 and Table 1; Ioffe 2017, Batch "
              "Renormalization")
    claim = ("BN's error grows rapidly as the per-batch size shrinks (ResNet-50: 23.6% at 32 "
             "images per GPU, 34.7% at 2) while GroupNorm and LayerNorm stay flat (GN 24.1% at "
             "both); Batch Renorm recovers part of BN's small-batch loss.")
    quick_scale = 0.1

    def setup(self, data: Dataset, scale: float) -> str:
        h, w = image_shape(data.image_shape)
        samples = scaled(SAMPLES, scale, 2 * max(BATCHES))
        return (f"On {data.describe()}: the CNN [conv3x3 16 -> norm -> ReLU -> maxpool2] -> "
                f"[conv3x3 32 -> norm -> ReLU -> maxpool2] -> Linear on {h}x{w} inputs (images "
                f"above 16 px 2x2 average-pooled), He-normal conv weights, norm = BatchNorm2d, "
                f"GroupNorm ({group_count(16)}/{group_count(32)} groups: the paper's 32 groups "
                f"would leave one channel per group here, i.e. InstanceNorm, so groups of "
                f"{32 // group_count(32)} channels), LayerNorm (GroupNorm with 1 group, "
                f"per-channel gamma/beta), InstanceNorm2d (affine), Batch Renorm (r_max 3, "
                f"d_max 5, the paper's 5k/25k/40k-step schedule times run steps / 80k, so the "
                f"ramps end half-way) or none. Batch sizes {list(BATCHES)}, plain SGD with lr "
                f"{BASE_LR} x batch / {BASE_BATCH}; every run sees {samples:,} training samples "
                f"(so batch 2 takes {samples // 2:,} steps, batch 64 {samples // 64:,}); all "
                f"runs share initial weights (per method) and the sample order. Test error "
                f"after the last step, in eval mode (BN/Batch Renorm with running statistics, "
                f"momentum 0.1). At batch 2 each BN channel still pools 2 x {h}x{w} = {2 * h * w} "
                f"values in the first block and 2 x {h // 2}x{w // 2} = {2 * (h // 2) * (w // 2)} "
                f"in the second, from near-identically framed digits, so the batch statistics "
                f"are far less noisy than in the paper's ImageNet setting and the effect can be "
                f"much smaller here. One seed. Scaled down from ResNet-50 on ImageNet; full size "
                f"took under 3 minutes on a loaded 2-core machine (NumPy engine, one BLAS "
                f"thread).")

    def runs(self, data: Dataset, scale: float) -> list[Run]:
        samples = scaled(SAMPLES, scale, 2 * max(BATCHES))
        out = []
        for method in METHODS:
            for b in BATCHES:
                steps = max(1, samples // b)
                cfg = {"norm": method, "batch": b, "lr": BASE_LR * b / BASE_BATCH,
                       "steps": steps, "evals": eval_steps(steps, N_EVALS),
                       "n_classes": data.n_classes,
                       "schedule": renorm_schedule(steps) if method == "renorm" else None}
                out.append(Run(f"{method}-b{b}", cfg, f"{LABELS[method]}, batch {b}"))
        return out

    def run(self, ctx: RunContext, cfg: dict) -> dict:
        data = ctx.data
        spec = cnn_spec(image_shape(data.image_shape), cfg["n_classes"], cfg["norm"],
                        schedule=cfg["schedule"])
        trainer = make_trainer(ctx.engine, spec, INIT_STD, ctx.rng("init", cfg["norm"]),
                               cfg["lr"])
        # one sample order for every run: batch b at step s covers samples [s*b, (s+1)*b)
        stream = derive_seed(ctx.seed, self.name, "batches")
        return train_curve(ctx, trainer, (as_images(data.x_train), data.y_train),
                           (as_images(data.x_test), data.y_test), steps=cfg["steps"],
                           batch=cfg["batch"], evals=cfg["evals"], stream=stream)

    def summarize(self, runs: list[Run], metrics: dict[str, dict]) -> Summary:
        err = {m: {b: 1.0 - metrics[f"{m}-b{b}"]["test_acc"][-1] for b in BATCHES}
               for m in METHODS}
        delta = {m: err[m][2] - err[m][32] for m in METHODS}
        d_bn = delta["batch"]
        a = ("holds" if d_bn >= BN_DEGRADES else
             "does not hold" if d_bn < BN_FLAT_NONE else "inconclusive")
        worst_flat = max(delta["group"], delta["layer"])
        b = ("holds" if d_bn > 0 and worst_flat <= FLAT_FRACTION * d_bn else
             "does not hold" if worst_flat >= d_bn else "inconclusive")
        recovered = err["batch"][2] - err["renorm"][2]
        c = ("holds" if d_bn > 0 and recovered >= RECOVER_FRACTION * d_bn else
             "does not hold" if recovered <= 0 else "inconclusive")
        parts = (a, b, c)
        verdict = ("holds" if all(p == "holds" for p in parts) else
                   "does not hold" if "does not hold" in parts else "inconclusive")
        measured = {f"test error % at batch {'/'.join(map(str, BATCHES))}, {LABELS[m]}":
                    " / ".join(f"{100 * err[m][b]:.1f}" for b in BATCHES) for m in METHODS}
        measured.update({
            "BN: error(2) - error(32), points": round(100 * d_bn, 2),
            "GN: error(2) - error(32), points": round(100 * delta["group"], 2),
            "LN: error(2) - error(32), points": round(100 * delta["layer"], 2),
            "Batch Renorm: error(2) - error(32), points": round(100 * delta["renorm"], 2),
            "Batch Renorm gain over BN at batch 2, points": round(100 * recovered, 2),
            "reference: GN paper ResNet-50 top-1 error % at 32/16/8/4/2 per GPU":
                "BN 23.6/23.7/24.8/27.3/34.7, GN 24.1/24.2/24.0/24.2/24.1; "
                "at 32: LN 25.3, IN 28.4",
        })
        reason = (f"(a) BN degrades by {100 * d_bn:.2f} points from batch 32 to 2 -> {a}; "
                  f"(b) GN/LN degrade by {100 * delta['group']:.2f}/{100 * delta['layer']:.2f}"
                  f" -> {b}; (c) Batch Renorm recovers {100 * recovered:.2f} points at batch 2"
                  f" -> {c}")
        thresholds = (f"Delta = test error at batch 2 - at batch 32. (a) holds if Delta_BN >= "
                      f"{BN_DEGRADES}, does not hold if < {BN_FLAT_NONE}. (b) holds if "
                      f"max(Delta_GN, Delta_LN) <= {FLAT_FRACTION} x Delta_BN, does not hold "
                      f"if >= Delta_BN. (c) holds if error_BN(2) - error_Renorm(2) >= "
                      f"{RECOVER_FRACTION} x Delta_BN, does not hold if <= 0. Overall holds if "
                      f"all three hold, does not hold if any does not, else inconclusive.")
        rows = [{"batch": b, "lr": BASE_LR * b / BASE_BATCH,
                 **{f"test_error_{m}": err[m][b] for m in METHODS}} for b in BATCHES]
        return Summary(measured, verdict, reason, thresholds, rows)

    def figures(self, runs: list[Run], metrics: dict[str, dict], summary: Summary) -> dict:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 3.9), layout="constrained")
        ax = axes[0]
        for m, style in zip(METHODS, ("o-", "s-", "^-", "v-", "D-", "x--"), strict=True):
            ax.plot(BATCHES, [100 * (1 - metrics[f"{m}-b{b}"]["test_acc"][-1])
                              for b in BATCHES], style, label=LABELS[m])
        ax.set_xscale("log", base=2)
        ax.set_xticks(BATCHES, [str(b) for b in BATCHES])
        ax.invert_xaxis()
        ax.set(xlabel="images per batch", ylabel="test error (%)", title="This run")
        ax.legend(loc="best", fontsize="small")
        ax = axes[1]
        for m, style in (("batch", "o-"), ("group", "s-")):
            pts = sorted(PAPER[m].items())
            ax.plot(*zip(*pts, strict=True), style, label=LABELS[m])
        ax.set_xscale("log", base=2)
        ax.set_xticks([2, 4, 8, 16, 32], ["2", "4", "8", "16", "32"])
        ax.invert_xaxis()
        ax.set(xlabel="images per GPU", ylabel="top-1 error (%)",
               title="GN paper, ResNet-50 ImageNet (published)")
        ax.legend(loc="best", fontsize="small")
        return {"error_vs_batch": fig}
