"""Normalization in an LSTM: none vs LayerNorm vs recurrent (per-step) BN vs sequence-wise BN.

Ba et al. 2016 (Layer Normalization, sec. 3.1 and 6.x) and Cooijmans et al. 2016 (Recurrent Batch
Normalization, sec. 3-5, pixel-by-pixel MNIST) report that normalizing the LSTM's input and
recurrent pre-activations (and its cell) makes it train faster than the plain LSTM. BN in an RNN
needs statistics per time step (Cooijmans: separate statistics for every t, gamma initialised to
0.1); the seeds (note 004) describe the simple alternative: one set of statistics over batch x
time, applied to the input projection W_x x only, because the recurrent W_h h changes with t.
Here each image is read as a sequence of pixel rows (8 steps of 8 pixels for ``digits``, 28 of 28
for MNIST-like data) by the NumPy-engine LSTM of :mod:`normlab.nn.recurrent`.

Two details of Cooijmans et al.'s sequential-MNIST setup (sec. 5.1) are part of the method: the
global gradient norm is clipped at 1 for every LSTM, and the BN-LSTM starts from a NOISY initial
hidden state h_0 ~ N(0, 0.1^2) (their script: ``--noise 0.1``; the plain LSTM starts from zeros).
The top rows of MNIST are blank, so with h_0 = 0 every sample has the same h_t for the first
steps: W_h h_t has zero batch variance, per-step BN divides by sqrt(eps), and the gradient
explodes ("We work around this by injecting noise into the initial hidden states").
"""

from __future__ import annotations

import numpy as np

from .. import nn, optim
from ..data import Dataset
from .base import Experiment, Metrics, Run, RunContext, derive_seed, scaled
from .curve import speedup, steps_to
from .evidence import Criterion, Published
from .holdout import parts
from .plots import BAND_NOTE, band, seeds_of
from .train import epoch_batch

STEPS = 1500
BATCH = 64
LR = 0.5
HIDDEN = 64
N_EVALS = 20
CLIP = 1.0        # Cooijmans et al. sec. 5.1: "gradient clipping at 1" (global norm), all four
H0_NOISE = {"recurrent_batch": 0.1}   # std of the noisy h_0 (Cooijmans sec. 5.1); others: zeros
NORMS = {"none": "plain LSTM", "layer": "LayerNorm (Ba et al.)",
         "recurrent_batch": "per-step BN, gamma 0.1 (Cooijmans et al.)",
         "sequence_batch": "sequence-wise BN of W_x x (seed 004)"}

TARGET_FRACTION = 0.9   # common level: 90% of the best final validation accuracy of the four


def faster(norm: str) -> str:
    return f"steps to the target, plain LSTM / {norm}"


COOIJMANS = ("sequential MNIST (pixel by pixel, T = 784), 1 layer of 100 LSTM units, RMSProp "
             "lr 1e-3, gradient clipping 1.0, batch 64")

def initial_state(noise: float, n: int, hidden: int, rng: np.random.Generator):
    """(h_0, c_0) with h_0 ~ N(0, noise^2) and c_0 = 0, or None (zeros) when ``noise`` is 0."""
    if not noise:
        return None
    return (rng.normal(0.0, noise, (n, hidden)).astype(np.float32),
            np.zeros((n, hidden), dtype=np.float32))


def clip_grad_norm(params, max_norm: float) -> float:
    """Scale all gradients so their global L2 norm is at most ``max_norm``; returns the norm."""
    norm = float(np.sqrt(sum(float(np.vdot(p.grad, p.grad)) for p in params
                             if p.grad is not None)))
    if norm > max_norm:
        for p in params:
            if p.grad is not None:
                p.grad *= max_norm / norm
    return norm


def _accuracy(lstm, head, x: np.ndarray, y: np.ndarray, noise: float = 0.0,
              rng: np.random.Generator | None = None, chunk: int = 500) -> float:
    lstm.eval()
    head.eval()
    correct = 0
    for s in range(0, len(x), chunk):
        out, _ = lstm(x[s:s + chunk], initial_state(noise, len(x[s:s + chunk]),
                                                    lstm.hidden_size, rng))
        correct += int((head(out[:, -1]).argmax(1) == y[s:s + chunk]).sum())
    return correct / max(1, len(x))


class RnnNorm(Experiment):
    name = "rnn-norm"
    title = "Normalized LSTMs train faster (Layer Norm; Recurrent BN)"
    source = ("Ba, Kiros, Hinton 2016, Layer Normalization, sec. 3.1; Cooijmans, Ballas, Laurent, "
              "Gulcehre, Courville 2016, Recurrent Batch Normalization, sec. 3-5; seed note 004 "
              "(sequence-wise BN)")
    claim = ("An LSTM with layer normalization or with per-time-step batch normalization (gamma "
             "init 0.1) trains faster than the plain LSTM; sequence-wise BN of the input "
             "projection is the simple alternative the seed describes (reported, not judged).")
    quick_scale = 0.2
    criteria = (
        Criterion("LayerNorm trains faster", faster("layer"), 1.5, log=True),
        Criterion("per-step BN trains faster", faster("recurrent_batch"), 1.5, log=True),
    )
    published = (
        Published("Cooijmans et al. 2016", "Table 1", "test accuracy, sequential MNIST",
                  "LSTM 98.9%, BN-LSTM 99.0%", COOIJMANS,
                  "final test accuracy, recurrent_batch"),
        Published("Cooijmans et al. 2016", "Table 1", "test accuracy, permuted sequential "
                  "MNIST", "LSTM 90.2%, BN-LSTM 95.4%", COOIJMANS, None),
        Published("Cooijmans et al. 2016", "sec. 5.1, Fig. 2",
                  "training speed of BN-LSTM vs LSTM", "BN-LSTM converges faster (a plot)",
                  COOIJMANS, faster("recurrent_batch"), qualitative=True),
        Published("Ba, Kiros, Hinton 2016", "sec. 6, Figs. 2-5",
                  "training speed of LN-LSTM vs LSTM", "LN converges faster in every task "
                  "shown (plots)", "order embeddings, reading comprehension, skip-thoughts, "
                  "permuted MNIST (LN-GRU/LSTM)", faster("layer"), qualitative=True),
    )
    definitions = (f"Target = {TARGET_FRACTION} x the best final validation accuracy (mean of "
                   f"the last two evaluations) of the four LSTMs, per seed; steps to it are "
                   f"interpolated between evaluations, and an LSTM that never reaches it counts "
                   f"as needing 2x the budget. Test accuracy: once, after the last step.")

    def setup(self, data: Dataset, scale: float) -> str:
        steps = scaled(STEPS, scale, 20)
        t, i = data.image_shape
        return (f"Single-layer LSTM (hidden {HIDDEN}, batch-first, NumPy engine with hand-written "
                f"BPTT) + Linear({HIDDEN}, {data.n_classes}) on the last hidden state; each image "
                f"of {data.describe()} is a sequence of T={t} rows of {i} pixels. Norms: "
                f"{'; '.join(f'{k}: {v}' for k, v in NORMS.items())}. Identical initial LSTM "
                f"and head weights (torch's U(-1/sqrt(H), 1/sqrt(H))) and batches for all four; "
                f"plain SGD lr {LR} with the global gradient norm clipped at {CLIP} (Cooijmans "
                f"et al. sec. 5.1), batch {BATCH}, {steps:,} steps (full size {STEPS:,}; the "
                f"papers train for tens of thousands of steps on pixel-by-pixel MNIST, T=784); "
                f"as in Cooijmans et al. sec. 5.1 the BN-LSTM starts from a noisy h_0 ~ "
                f"N(0, {H0_NOISE['recurrent_batch']}^2) in training and test (the blank top rows "
                f"give zero-variance W_h h otherwise, and the gradient explodes), the others "
                f"from zeros; validation accuracy (eval mode: running statistics) at "
                f"{N_EVALS} points, test accuracy once at the end. Runs on the NumPy engine "
                f"only: there is no torch twin of the "
                f"normalized LSTMs in the model specs, so --engine torch is noted and ignored "
                f"here.")

    def runs(self, data: Dataset, scale: float) -> list[Run]:
        steps = scaled(STEPS, scale, 20)
        base = {"steps": steps, "batch": BATCH, "lr": LR, "hidden": HIDDEN, "clip": CLIP,
                "eval_every": max(1, steps // N_EVALS)}
        return [Run(norm, {**base, "norm": norm, "h0_noise": H0_NOISE.get(norm, 0.0)}, label)
                for norm, label in NORMS.items()]

    def run(self, ctx: RunContext, cfg: dict) -> dict:
        if ctx.engine != "numpy" and ctx.warn:
            ctx.warn(f"rnn-norm/{ctx.key}: runs on the NumPy engine (no torch twin of the "
                     f"normalized LSTM); --engine {ctx.engine} ignored")
        rng = ctx.rng("init")   # same stream for every norm: identical LSTM and head weights
        steps_t, inputs = ctx.data.image_shape
        lstm = nn.LSTM(inputs, cfg["hidden"], norm=cfg["norm"], rng=rng)
        head = nn.Linear(cfg["hidden"], ctx.data.n_classes, rng=rng)
        loss_fn = nn.CrossEntropyLoss()
        params = lstm.parameters() + head.parameters()
        opt = optim.SGD(params, lr=cfg["lr"])
        noise = cfg.get("h0_noise", 0.0)
        noise_rng = ctx.rng("h0", cfg["norm"])
        stream = derive_seed(ctx.seed, self.name, "batches")
        p = parts(ctx.data)
        x, y = p.train.x, p.train.y
        hist = {"step": [], "val_acc": [], "train_loss": []}
        losses = []
        for step in range(cfg["steps"]):
            idx = epoch_batch(stream, len(x), cfg["batch"], step)
            lstm.train()
            head.train()
            out, _ = lstm(x[idx], initial_state(noise, len(idx), cfg["hidden"], noise_rng))
            losses.append(loss_fn(head(out[:, -1]), y[idx]))
            d_out = np.zeros_like(out)
            d_out[:, -1] = head.backward(loss_fn.backward())   # the loss sees the last step
            lstm.backward_params(d_out)   # the images need no gradient
            if cfg.get("clip"):
                clip_grad_norm(params, cfg["clip"])
            opt.step()
            opt.zero_grad()
            done = step + 1
            if done % cfg["eval_every"] == 0 or done == cfg["steps"]:
                hist["step"].append(done)
                # the same eval-time h_0 noise at every evaluation: curves are not jittered by it
                hist["val_acc"].append(_accuracy(lstm, head, p.val.x, p.val.y, noise,
                                                 ctx.rng("h0-test", cfg["norm"])))
                hist["train_loss"].append(float(np.mean(losses)))
                losses = []
                ctx.report(done, cfg["steps"])
        test_acc = _accuracy(lstm, head, p.test.x, p.test.y, noise,
                             ctx.rng("h0-test", cfg["norm"]))
        return {**hist, "engine": "numpy", "final_acc": float(np.mean(hist["val_acc"][-2:])),
                "test_acc": test_acc}

    def statistics(self, runs: list[Run], metrics: Metrics) -> dict[str, float]:
        target = TARGET_FRACTION * max(metrics[k]["final_acc"] for k in NORMS)
        reach = {k: steps_to(metrics[k]["step"], metrics[k]["val_acc"], target) for k in NORMS}
        budget = metrics["none"]["step"][-1]
        return {**{faster(k): speedup(reach["none"], reach[k], budget) for k in NORMS
                   if k != "none"},
                **{f"final test accuracy, {k}": metrics[k]["test_acc"] for k in NORMS},
                "target validation accuracy": target}

    def rows(self, runs: list[Run], metrics: Metrics) -> list[dict]:
        return [{"step": s, **{f"{m}_{k}": metrics[k][m][i] for k in NORMS
                               for m in ("val_acc", "train_loss")}}
                for i, s in enumerate(metrics["none"]["step"])]

    def scale_note(self, data: Dataset, scale: float) -> str:
        t, i = data.image_shape
        return (f"row by row (T = {t}), LSTM of {HIDDEN} units, SGD lr {LR}, "
                f"{scaled(STEPS, scale, 20):,} steps of {BATCH}")

    def figures(self, runs, by_seed, summary) -> dict:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
        steps = by_seed[min(by_seed)]["none"]["step"]
        for k, label in NORMS.items():
            line = band(axes[0], steps, seeds_of(by_seed, k, "train_loss"), "-", label)
            band(axes[1], steps, seeds_of(by_seed, k, "val_acc"), "-", label,
                 color=line.get_color())
        axes[0].set(xlabel="training step", ylabel="training loss", title="Training loss")
        axes[1].set(xlabel="training step", ylabel="validation accuracy", ylim=(0, 1),
                    title="Validation accuracy")
        axes[1].legend(loc="lower right", fontsize="small")
        fig.suptitle(BAND_NOTE, fontsize="small")
        return {"rnn_norm": fig}
