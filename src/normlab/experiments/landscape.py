"""Santurkar et al. 2018, "How Does Batch Normalization Help Optimization?", sec. 3.1 and Fig. 4.

At checkpoints during training, from the current weights theta with mini-batch gradient g, move
along the gradient direction, theta - eta * g for step sizes eta in [0.05, 0.4], and measure on
the same mini-batch (training mode, as the optimizer sees it):

* loss landscape variation: max - min of L(theta - eta g) over the step sizes (Fig. 4a);
* gradient predictiveness: max over eta of ||grad L(theta - eta g) - g||_2 (Fig. 4b);
* "effective" beta-smoothness: max over eta of ||grad L(theta - eta g) - g|| / ||eta g||
  (Fig. 4c).

The claim: with BN all three are smaller -- the landscape is smoother and the gradient is a
better guide to where a step will land.
"""

from __future__ import annotations

import numpy as np

from ..data import Dataset
from .base import Experiment, Run, RunContext, Summary, derive_seed, scaled
from .models import mlp_spec
from .train import epoch_batch, evaluate
from .train_eval import he_trainer

STEPS = 2000
BATCH = 60
LR = 0.1
HIDDEN = (100,) * 6
ETAS = tuple(np.round(np.linspace(0.05, 0.4, 8), 2).tolist())
N_CHECKS = 20

# Verdict rules (fixed before any run):
SMOOTHER = 1.5   # median over checkpoints, no BN / BN, of both variation and predictiveness


def _params(trainer) -> list:
    return list(trainer.model.parameters())


def _get(trainer) -> list[np.ndarray]:
    if trainer.engine == "torch":
        return [p.detach().numpy().copy() for p in _params(trainer)]
    return [p.data.copy() for p in _params(trainer)]


def _set(trainer, values: list[np.ndarray]) -> None:
    if trainer.engine == "torch":
        with trainer.torch.no_grad():
            for p, v in zip(_params(trainer), values, strict=True):
                p.copy_(trainer.torch.from_numpy(v))
    else:
        for p, v in zip(_params(trainer), values, strict=True):
            p.data[...] = v


def loss_and_grad(trainer, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Training-mode loss and the flattened gradient over all parameters (no optimizer step)."""
    trainer.model.train()
    if trainer.engine == "torch":
        torch = trainer.torch
        loss = trainer.loss(trainer.model(torch.from_numpy(x)), torch.from_numpy(y))
        trainer.opt.zero_grad()
        loss.backward()
        grads = [p.grad.numpy() for p in _params(trainer)]
        value = float(loss.detach())
    else:
        value = trainer.loss(trainer.model(x), y)
        trainer.opt.zero_grad()
        trainer.model.backward(trainer.loss.backward())
        grads = [p.grad for p in _params(trainer)]
    return value, np.concatenate([g.ravel() for g in grads]).astype(np.float64)


def probe(trainer, x: np.ndarray, y: np.ndarray, etas) -> dict:
    """Loss and gradient change along -g at each eta; the model is left exactly as it was."""
    saved = trainer.state()
    try:
        loss0, g0 = loss_and_grad(trainer, x, y)
        theta = _get(trainer)
        shapes = [t.shape for t in theta]
        splits = np.cumsum([t.size for t in theta])[:-1]
        losses, changes, betas = [], [], []
        for eta in etas:
            step = np.split(eta * g0, splits)
            _set(trainer, [(t - s.reshape(shape)).astype(t.dtype)
                           for t, s, shape in zip(theta, step, shapes, strict=True)])
            loss, g = loss_and_grad(trainer, x, y)
            change = float(np.linalg.norm(g - g0))
            losses.append(loss)
            changes.append(change)
            betas.append(change / max(float(np.linalg.norm(eta * g0)), 1e-30))
    finally:
        trainer.load_state(saved)
    finite = np.isfinite(losses)
    return {"loss0": loss0, "losses": losses,
            "variation": float(np.ptp(losses)) if finite.all() else float("inf"),
            "grad_change": float(max(changes)), "beta": float(max(betas)),
            "grad_norm": float(np.linalg.norm(g0))}


class Landscape(Experiment):
    name = "landscape"
    title = "BN makes the loss landscape smoother (Santurkar et al. 2018, Fig. 4)"
    source = ("Santurkar, Tsipras, Ilyas, Madry 2018, How Does Batch Normalization Help "
              "Optimization?, sec. 3.1 and Fig. 4")
    claim = ("Along the gradient direction the loss of a batch-normalized network varies less "
             "(smaller loss range over step sizes 0.05-0.4), and its gradient changes less (more "
             "predictive gradients, smaller effective beta-smoothness), than without BN.")
    quick_scale = 0.25

    def setup(self, data: Dataset, scale: float) -> str:
        steps = scaled(STEPS, scale, 40)
        sizes = "-".join(map(str, (data.n_features, *HIDDEN, data.n_classes)))
        return (f"{sizes} ReLU MLP on {data.describe()}, with and without BatchNorm1d before "
                f"each ReLU, identical He-normal initial weights and batches; plain SGD lr {LR}, "
                f"batch {BATCH}, {steps:,} steps (full size {STEPS:,}: about a minute per net on "
                f"2 cores). At {N_CHECKS} checkpoints, on the current mini-batch in training "
                f"mode: the loss and gradient at theta - eta g for eta in {list(ETAS)} (g = the "
                f"mini-batch gradient, the model restored afterwards). Scaled down from the "
                f"paper's VGG on CIFAR-10 to a deep MLP; the measurement is the paper's.")

    def runs(self, data: Dataset, scale: float) -> list[Run]:
        steps = scaled(STEPS, scale, 40)
        base = {"sizes": [data.n_features, *HIDDEN, data.n_classes], "steps": steps,
                "batch": BATCH, "lr": LR, "etas": list(ETAS),
                "check_every": max(1, steps // N_CHECKS)}
        return [Run("plain", {**base, "bn": False}, "without BN"),
                Run("bn", {**base, "bn": True}, "with BN")]

    def run(self, ctx: RunContext, cfg: dict) -> dict:
        trainer = he_trainer(ctx.engine, mlp_spec(cfg["sizes"], "relu", cfg["bn"]),
                             ctx.rng("init"), cfg["lr"])
        stream = derive_seed(ctx.seed, self.name, "batches")
        x, y = ctx.data.flat("train")
        out = {"step": [], "variation": [], "grad_change": [], "beta": [], "loss": [],
               "grad_norm": []}
        with np.errstate(over="ignore", invalid="ignore"):   # a diverging plain net is data
            for step in range(cfg["steps"]):
                idx = epoch_batch(stream, len(x), cfg["batch"], step)
                if step % cfg["check_every"] == 0:
                    p = probe(trainer, x[idx], y[idx], cfg["etas"])
                    out["step"].append(step)
                    for k in ("variation", "grad_change", "beta", "grad_norm"):
                        out[k].append(p[k])
                    out["loss"].append(p["loss0"])
                trainer.train_step(x[idx], y[idx])
                if (step + 1) % 50 == 0:
                    ctx.report(step + 1, cfg["steps"])
        x_te, y_te = ctx.data.flat("test")
        out["test_acc"] = evaluate(trainer, x_te, y_te)[0]
        return out

    def summarize(self, runs: list[Run], metrics: dict[str, dict]) -> Summary:
        plain, bn = metrics["plain"], metrics["bn"]

        def med(m, k):
            v = np.asarray([np.inf if a is None else a for a in m[k]], dtype=np.float64)
            return float(np.median(v))

        ratio = {k: med(plain, k) / max(med(bn, k), 1e-30)
                 for k in ("variation", "grad_change", "beta")}
        key = (ratio["variation"], ratio["grad_change"])
        verdict = ("holds" if min(key) >= SMOOTHER else
                   "does not hold" if min(key) <= 1.0 else "inconclusive")
        measured = {}
        for k, label in (("variation", "loss variation"), ("grad_change", "gradient change"),
                         ("beta", "effective beta-smoothness")):
            measured[f"median {label}, no BN"] = round(med(plain, k), 4)
            measured[f"median {label}, BN"] = round(med(bn, k), 4)
            measured[f"{label} ratio (no BN / BN)"] = round(ratio[k], 2)
        measured["final test accuracy, no BN / BN"] = (f"{plain['test_acc']:.4f} / "
                                                       f"{bn['test_acc']:.4f}")
        reason = (f"no BN / BN: loss variation {ratio['variation']:.2f}x, gradient change "
                  f"{ratio['grad_change']:.2f}x, beta-smoothness {ratio['beta']:.2f}x")
        thresholds = (f"Medians over the {len(plain['step'])} checkpoints. Holds if both the "
                      f"loss-variation ratio and the gradient-change ratio (no BN / BN) are >= "
                      f"{SMOOTHER}; does not hold if either is <= 1; otherwise inconclusive "
                      f"(beta-smoothness is reported, not judged).")
        rows = [{"step": s, **{f"{k}_{n}": m[k][i] for n, m in (("plain", plain), ("bn", bn))
                               for k in ("loss", "variation", "grad_change", "beta")}}
                for i, s in enumerate(plain["step"])]
        return Summary(measured, verdict, reason, thresholds, rows)

    def figures(self, runs: list[Run], metrics: dict[str, dict], summary: Summary) -> dict:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), layout="constrained")
        for key, colour, label in (("plain", "tab:gray", "Standard"),
                                   ("bn", "tab:blue", "Standard + BatchNorm")):
            m = metrics[key]
            for ax, k in zip(axes, ("variation", "grad_change", "beta"), strict=True):
                v = [np.nan if a is None else a for a in m[k]]
                ax.semilogy(m["step"], v, "o-", ms=3, color=colour, label=label)
        for ax, title in zip(axes, ("(a) loss landscape variation", "(b) gradient predictiveness"
                                    " (max l2 change)", "(c) effective beta-smoothness"),
                             strict=True):
            ax.set(xlabel="training step", title=title)
        axes[0].legend(loc="best", fontsize="small")
        return {"landscape": fig}
