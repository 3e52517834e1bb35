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
    (forward passes in training mode with ``momentum=None``, no weight change) restores accuracy.

The helpers here (:func:`he_trainer`, :func:`bn_layers`, :func:`forward_batch_stats`,
:func:`recalibrate`) work on both engines and are shared with the other BN experiments.
"""

from __future__ import annotations

import numpy as np

from .. import nn
from ..data import Dataset
from .base import Experiment, Run, RunContext, Summary, derive_seed, scaled
from .models import Spec, build_numpy, build_torch, mlp_spec
from .train import NumpyTrainer, TorchTrainer, epoch_batch, evaluate

STEPS = 2000
BATCH = 60
LR = 0.1
HIDDEN = (100, 100, 100)
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
MOMENTA = (0.01, 0.1, 0.5, None)
REESTIMATE_BATCHES = 400           # (b): batches fed to a freshly reset estimator
CONTRAST, BRIGHTNESS = 0.5, 0.3    # (c): x -> CONTRAST * x + BRIGHTNESS
RECAL_BATCHES = (1, 5, 20, 100)    # (c): recalibration lengths

# Verdict rules (fixed before any run):
SMALL_BATCH_DROP = 0.05   # (a) training-mode accuracy at batch 2 is >= 5 points below eval mode
LARGE_BATCH_SLACK = 0.02  # (a) ... and within 2 points of it at the largest batch
CLOSE = 0.01              # (b) "close to final": within 1 point of the exact-statistics accuracy
SHIFT_HURTS = 0.05        # (c) stale statistics cost >= 5 points on the shifted data
RECOVERED = 0.01          # (c) recalibration ends within 1 point of the unshifted accuracy


def he_trainer(engine: str, spec: Spec, rng: np.random.Generator, lr: float):
    """A trainer whose Linear weights are N(0, 2/fan_in) (He et al. 2015), on either engine.

    One std for all layers (``make_trainer``) shrinks or blows up the signal of a plain ReLU net
    with layers of different widths; He scaling keeps plain and BN nets comparable.
    """
    model = build_numpy(spec, 1.0, rng)
    for layer in model:
        if isinstance(layer, nn.Linear):
            layer.weight.data *= np.float32(np.sqrt(2.0 / layer.weight.shape[1]))
    if engine == "numpy":
        return NumpyTrainer(model, lr)
    if engine == "torch":
        return TorchTrainer(build_torch(spec, model.state_dict()), lr)
    raise ValueError(f"engine: expected 'numpy' or 'torch', got {engine!r}")


def bn_layers(trainer) -> list:
    """The BatchNorm layers of a trainer's model (same attributes on both engines)."""
    if trainer.engine == "torch":
        kinds = (trainer.torch.nn.modules.batchnorm._BatchNorm,)
    else:
        kinds = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    return [m for m in trainer.model if isinstance(m, kinds)]


def forward_batch_stats(trainer, x: np.ndarray) -> np.ndarray:
    """Logits of a training-mode forward (batch statistics; updates running stats; no step)."""
    trainer.model.train()
    if trainer.engine == "torch":
        torch = trainer.torch
        with torch.no_grad():
            return trainer.model(torch.from_numpy(x)).numpy()
    return trainer.model(x)


def train_mode_accuracy(trainer, x: np.ndarray, y: np.ndarray, batch: int) -> float:
    """Accuracy when every batch of ``batch`` examples is normalised with its own statistics.

    Running statistics are restored afterwards, so the model is left exactly as it was.
    """
    saved = trainer.state()
    try:
        n = len(x) // batch * batch
        correct = sum(int((forward_batch_stats(trainer, x[s:s + batch]).argmax(1)
                           == y[s:s + batch]).sum()) for s in range(0, n, batch))
    finally:
        trainer.load_state(saved)
    return correct / n


def recalibrate(trainer, batches) -> None:
    """Re-estimate every BN layer's running statistics from ``batches`` (inputs only).

    Reset, then a cumulative average (``momentum=None``) over the batches: every batch gets the
    same weight and nothing is left of the old estimates. Weights do not change.
    """
    layers = bn_layers(trainer)
    saved = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
    for xb in batches:
        forward_batch_stats(trainer, xb)
    for m, momentum in zip(layers, saved, strict=True):
        m.momentum = momentum


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
             "batches (batch 1 is impossible); eval mode is batch-independent. (b) The smaller "
             "the running-average momentum, the more batches the running estimates need before "
             "eval accuracy is right; the cumulative average (momentum=None) is fastest. (c) "
             "After an input shift the running statistics are stale; recalibrating them (no "
             "weight change) restores accuracy.")
    quick_scale = 0.25

    def setup(self, data: Dataset, scale: float) -> str:
        steps = scaled(STEPS, scale, 50)
        sizes = "-".join(map(str, (data.n_features, *HIDDEN, data.n_classes)))
        return (f"One {sizes} MLP with Linear -> BatchNorm1d (momentum 0.1) -> ReLU hidden "
                f"layers on {data.describe()}; He-normal weights, plain SGD lr {LR}, batch "
                f"{BATCH}, {steps:,} steps (full size {STEPS:,}; a few seconds per run on 2 "
                f"cores), retrained identically (same seed, weights and batches) in each of the "
                f"three runs. (a) test accuracy in training mode (batch statistics, running "
                f"stats restored afterwards) for test batches of {BATCH_SIZES} vs eval mode; "
                f"(b) running statistics reset, then re-estimated from up to "
                f"{scaled(REESTIMATE_BATCHES, scale, 40)} training batches (full size "
                f"{REESTIMATE_BATCHES}) with momentum {MOMENTA} and the weights frozen, eval "
                f"accuracy vs batches seen; reference: statistics from a cumulative average "
                f"over one epoch; (c) inputs shifted to {CONTRAST} x + {BRIGHTNESS} (contrast and "
                f"brightness); accuracy with the stale statistics and after recalibrating on "
                f"{RECAL_BATCHES} shifted training batches (momentum=None, no weight change). "
                f"Scaled down from ImageNet-size nets to an MLP; the method is unchanged.")

    def runs(self, data: Dataset, scale: float) -> list[Run]:
        base = {"sizes": [data.n_features, *HIDDEN, data.n_classes],
                "steps": scaled(STEPS, scale, 50), "batch": BATCH, "lr": LR}
        return [Run("batch-size", {**base, "part": "a",
                                   "batch_sizes": list(BATCH_SIZES)}, "(a) train vs eval mode"),
                Run("momentum", {**base, "part": "b",
                                 "reestimate": scaled(REESTIMATE_BATCHES, scale, 40)},
                    "(b) running-average momentum"),
                Run("shift", {**base, "part": "c", "recal": list(RECAL_BATCHES),
                              "contrast": CONTRAST, "brightness": BRIGHTNESS},
                    "(c) stale statistics")]

    def trained(self, ctx: RunContext, cfg: dict):
        """The BN net every part measures: same seed, weights and batches in every run."""
        trainer = he_trainer(ctx.engine, mlp_spec(cfg["sizes"], "relu", True), ctx.rng("init"),
                             cfg["lr"])
        stream = derive_seed(ctx.seed, self.name, "batches")
        x, y = ctx.data.flat("train")
        losses = []
        for step in range(cfg["steps"]):
            idx = epoch_batch(stream, len(x), cfg["batch"], step)
            losses.append(trainer.train_step(x[idx], y[idx]))
            if (step + 1) % 50 == 0:
                ctx.report(step + 1, cfg["steps"] + 1)
        return trainer, float(np.mean(losses[-max(1, len(losses) // 10):]))

    def run(self, ctx: RunContext, cfg: dict) -> dict:
        trainer, loss = self.trained(ctx, cfg)
        part = {"a": self._batch_size, "b": self._momentum, "c": self._shift}[cfg["part"]]
        out = {"final_train_loss": loss, **part(ctx, cfg, trainer)}
        ctx.report(cfg["steps"] + 1, cfg["steps"] + 1)
        return out

    def _batch_size(self, ctx: RunContext, cfg: dict, trainer) -> dict:
        x, y = ctx.data.flat("test")
        train_acc, eval_acc, errors = [], [], {}
        for b in cfg["batch_sizes"]:
            n = len(x) // b * b
            eval_acc.append(evaluate(trainer, x[:n], y[:n])[0] if n else None)
            try:
                train_acc.append(train_mode_accuracy(trainer, x, y, b) if n else None)
            except ValueError as exc:   # batch 1: BN cannot normalise a single value
                train_acc.append(None)
                errors[str(b)] = str(exc)
        # Eval mode must not depend on the batch: logits one example at a time vs all at once.
        m = min(len(x), 200)
        together = trainer.forward_eval(x[:m])[0]
        alone = np.concatenate([trainer.forward_eval(x[i:i + 1])[0] for i in range(m)])
        return {"batch_sizes": cfg["batch_sizes"], "train_mode_acc": train_acc,
                "eval_mode_acc": eval_acc, "eval_acc_full": evaluate(trainer, x, y)[0],
                "errors": errors,
                "eval_batch_dependence": float(np.abs(together - alone).max())}

    def _momentum(self, ctx: RunContext, cfg: dict, trainer) -> dict:
        x_tr, _ = ctx.data.flat("train")
        x_te, y_te = ctx.data.flat("test")
        stream = derive_seed(ctx.seed, self.name, "reestimate")
        n_epoch = max(1, len(x_tr) // cfg["batch"])
        recalibrate(trainer, (x_tr[epoch_batch(stream, len(x_tr), cfg["batch"], s)]
                              for s in range(n_epoch)))
        reference = evaluate(trainer, x_te, y_te)[0]
        grid = _log_grid(cfg["reestimate"])
        curves = {}
        for momentum in MOMENTA:
            layers = bn_layers(trainer)
            for m in layers:
                m.reset_running_stats()
                m.momentum = momentum
            acc, seen = [], 0
            for k in grid:
                while seen < k:     # every momentum sees the same batches in the same order
                    forward_batch_stats(trainer, x_tr[epoch_batch(stream, len(x_tr),
                                                                  cfg["batch"], seen)])
                    seen += 1
                acc.append(evaluate(trainer, x_te, y_te)[0])
            curves[str(momentum)] = acc
        return {"grid": grid, "reference_acc": reference, "acc": curves}

    def _shift(self, ctx: RunContext, cfg: dict, trainer) -> dict:
        x_tr, _ = ctx.data.flat("train")
        x_te, y_te = ctx.data.flat("test")

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

    def summarize(self, runs: list[Run], metrics: dict[str, dict]) -> Summary:
        a, b, c = metrics["batch-size"], metrics["momentum"], metrics["shift"]
        # (a)
        pairs = [(bs, t) for bs, t in zip(a["batch_sizes"], a["train_mode_acc"], strict=True)
                 if t is not None]
        eval_acc = a["eval_acc_full"]
        smallest, largest = pairs[0], pairs[-1]
        drop_small = eval_acc - smallest[1]
        gap_large = abs(eval_acc - largest[1])
        va = ("holds" if drop_small >= SMALL_BATCH_DROP and gap_large <= LARGE_BATCH_SLACK
              and a["eval_batch_dependence"] < 1e-3 else
              "does not hold" if drop_small < CLOSE or a["eval_batch_dependence"] >= 1e-3 else
              "inconclusive")
        # (b)
        grid, ref = b["grid"], b["reference_acc"]

        def needed(acc):
            hit = [k for k, v in zip(grid, acc, strict=True) if v >= ref - CLOSE]
            return hit[0] if hit else None

        need = {m: needed(v) for m, v in b["acc"].items()}

        def n(m):
            return need[m] if need[m] is not None else float("inf")

        vb = ("holds" if n("0.01") > n("0.1") >= n("0.5") and n("None") <= n("0.1") else
              "does not hold" if n("0.01") <= n("0.1") else "inconclusive")
        # (c)
        drop = c["clean_acc"] - c["stale_acc"]
        recovered = c["recal_acc"][-1]
        vc = ("inconclusive" if drop < SHIFT_HURTS else
              "holds" if recovered >= c["clean_acc"] - RECOVERED else
              "does not hold" if recovered - c["stale_acc"] < 0.5 * drop else "inconclusive")
        parts = (va, vb, vc)
        verdict = ("holds" if all(v == "holds" for v in parts) else
                   "does not hold" if "does not hold" in parts else "inconclusive")
        measured = {
            "eval-mode test accuracy": round(eval_acc, 4),
            "training mode, batch 1": a["errors"].get("1", "ran")[:90],
            f"training-mode accuracy, batch {smallest[0]}": round(smallest[1], 4),
            f"training-mode accuracy, batch {largest[0]}": round(largest[1], 4),
            "eval mode: max |logit diff| batch 1 vs all": f"{a['eval_batch_dependence']:.2e}",
            "exact-statistics accuracy (b reference)": round(ref, 4),
            **{f"batches to within {CLOSE} of it, momentum {m}":
               (k if k is not None else f"> {grid[-1]}") for m, k in need.items()},
            "clean test accuracy (c)": round(c["clean_acc"], 4),
            "shifted inputs, stale statistics": round(c["stale_acc"], 4),
            **{f"shifted, recalibrated on {k} batches": round(v, 4)
               for k, v in zip(c["recal_batches"], c["recal_acc"], strict=True)},
        }
        reason = (f"(a) batch {smallest[0]} is {drop_small:.3f} below eval mode, batch "
                  f"{largest[0]} within {gap_large:.3f} -> {va}; (b) batches needed "
                  f"{ {m: need[m] for m in need} } -> {vb}; (c) shift costs {drop:.3f}, "
                  f"recalibration reaches {recovered:.4f} vs clean {c['clean_acc']:.4f} -> {vc}")
        thresholds = (f"(a) holds if training-mode accuracy at the smallest possible batch is "
                      f">= {SMALL_BATCH_DROP} below eval mode, within {LARGE_BATCH_SLACK} of it "
                      f"at the largest batch, and eval-mode logits do not depend on the batch "
                      f"(< 1e-3); does not hold if the small-batch drop < {CLOSE} or eval mode "
                      f"depends on the batch. (b) 'needed' = first batch count at which eval "
                      f"accuracy is within {CLOSE} of the exact-statistics accuracy; holds if "
                      f"needed(0.01) > needed(0.1) >= needed(0.5) and needed(None) <= "
                      f"needed(0.1); does not hold if needed(0.01) <= needed(0.1). (c) "
                      f"inconclusive if the shift costs < {SHIFT_HURTS}; holds if recalibration "
                      f"on {RECAL_BATCHES[-1]} batches ends within {RECOVERED} of the clean "
                      f"accuracy; does not hold if it recovers < half of the drop. Overall: all "
                      f"hold -> holds; any fails -> does not hold; else inconclusive.")
        rows = ([{"part": "a", "x": bs, "train_mode_acc": t, "eval_mode_acc": e}
                 for bs, t, e in zip(a["batch_sizes"], a["train_mode_acc"], a["eval_mode_acc"],
                                     strict=True)]
                + [{"part": "b", "x": k, "momentum": m, "eval_acc": v[i]}
                   for m, v in b["acc"].items() for i, k in enumerate(grid)]
                + [{"part": "c", "x": k, "eval_acc": v}
                   for k, v in zip(c["recal_batches"], c["recal_acc"], strict=True)])
        rows = [{k: r.get(k) for k in ("part", "x", "momentum", "train_mode_acc",
                                        "eval_mode_acc", "eval_acc")} for r in rows]
        return Summary(measured, verdict, reason, thresholds, rows)

    def figures(self, runs: list[Run], metrics: dict[str, dict], summary: Summary) -> dict:
        import matplotlib.pyplot as plt

        a, b, c = metrics["batch-size"], metrics["momentum"], metrics["shift"]
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
        ax = axes[0]
        bs = [s for s, t in zip(a["batch_sizes"], a["train_mode_acc"], strict=True)
              if t is not None]
        ax.semilogx(bs, [t for t in a["train_mode_acc"] if t is not None], "o-",
                    base=2, label="training mode (batch stats)")
        ax.axhline(a["eval_acc_full"], color="tab:green", label="eval mode (any batch)")
        ax.set(xlabel="test batch size", ylabel="test accuracy", ylim=(0, 1),
               title="(a) train() vs eval() at inference")
        ax.legend(loc="lower right", fontsize="small")
        ax = axes[1]
        for m, acc in b["acc"].items():
            ax.semilogx(b["grid"], acc, "o-", ms=3, label=f"momentum {m}")
        ax.axhline(b["reference_acc"], color="black", ls=":", label="exact statistics")
        ax.set(xlabel="batches seen by the reset estimator", ylabel="eval accuracy",
               ylim=(0, 1), title="(b) running-average momentum")
        ax.legend(loc="lower right", fontsize="small")
        ax = axes[2]
        labels = ["clean", "shifted,\nstale"] + [f"recal.\n{k}" for k in c["recal_batches"]]
        values = [c["clean_acc"], c["stale_acc"], *c["recal_acc"]]
        ax.bar(range(len(values)), values,
               color=["tab:green", "tab:red"] + ["tab:blue"] * len(c["recal_acc"]))
        ax.set_xticks(range(len(values)), labels, fontsize="small")
        ax.set(ylabel="test accuracy", ylim=(0, 1), title="(c) stale statistics, recalibration")
        return {"train_eval": fig}
