"""Ba, Kiros & Hinton 2016, Table 1, and Wu & He 2018, Fig. 2: what each normaliser is invariant
to, and which elements share one mean and variance.

Every normaliser sees the summed inputs ``a = W x`` of one layer (the framing of Ba et al. sec.
5.1, eq. 5), for a batch of 8 real images, and is run with its affine parameters at their
initial values (gamma 1, beta 0). Each transformation of the weights, of the data or of the
batch is applied, and the output's largest change relative to the output's largest value is
measured; below :data:`INVARIANT` counts as invariant, above :data:`CHANGED` as not (between
the two: ambiguous, which disagrees with any table). Two framings:

* a fully connected layer (16 input features, 6 units): BN, BN in eval mode, ghost BN (groups
  of 4), Batch Renorm with r and d unclipped, weight normalisation and LayerNorm -- the columns
  of Ba et al.'s Table 1 and normlab's BatchNorm relatives;
* a 1x1 convolution (4 input channels, 6 channels, 7 x 7 positions): BatchNorm2d, the
  textbook's per-activation BN, InstanceNorm, GroupNorm (2 groups of 3 channels, as Wu & He's
  figure) and LayerNorm over (C, H, W) -- the panels of Wu & He's Fig. 2.

:data:`EXPECTED` is the table the claim is judged against: Ba et al.'s Table 1 for the cells it
has (BN, WN, LN in the fully connected framing, its six columns), and for every other cell what
the normaliser's statistics imply (which elements share one mean and variance), derived in the
comments beside it. The figure shows those shared elements as measured: one input element is
perturbed and every output element that moves shares statistics with it.
"""

from __future__ import annotations

import numpy as np

from .. import nn
from ..data import Dataset
from ..engines.numpy_layers import ActivationBatchNorm
from ..runner.base import Experiment, Metrics, Run, RunContext
from ..runner.design import DesignChange
from ..runner.evidence import Criterion, Published
from ..runner.holdout import parts

N = 8               # samples in the batch
UNITS = 6           # units / channels after the layer (Wu & He's figure draws 6 channels)
FC_IN = 16          # input features of the fully connected layer: a 4x4-pooled image
CONV_IN = 4         # input channels of the 1x1 convolution: 4 images per sample
SIDE = 7            # the convolution's 7 x 7 positions: 28x28 images 4x4-pooled
GROUPS = 2          # GroupNorm: 2 groups of 3 channels, as Wu & He's Fig. 2
GHOST = 4           # ghost BN: statistics over groups of 4 samples
EPS = 1e-10         # the formulas' invariances are exact as eps -> 0 (see EPS_EFFECT)
INVARIANT = 1e-3    # relative output change below this: invariant (float32)
CHANGED = 1e-2      # above this: not invariant
NOISE = 0.1         # N(0, NOISE^2) added to the standardised pixels: no statistic over constants

TRANSFORMS = {   # key -> label (Ba et al.'s column names first)
    "w_scale": "weight matrix re-scaling",
    "w_center": "weight matrix re-centering",
    "w_vector": "weight vector re-scaling (per-unit / per-channel scaling of the data set)",
    "x_scale": "dataset re-scaling",
    "x_center": "dataset re-centering (per-unit / per-channel shift)",
    "case_scale": "single training case re-scaling",
    "case_shift": "single training case shift (the same shift for all its summed inputs)",
    "others": "the other samples of the batch replaced",
}
BA_COLUMNS = ("w_scale", "w_center", "w_vector", "x_scale", "x_center", "case_scale")

# family -> (label, framing, expected invariance per transform in TRANSFORMS order)
_T, _F = True, False
EXPECTED = {
    # Ba et al. Table 1: Invariant No Invariant Invariant Invariant No; the batch: not invariant
    # (one mean per unit over the batch); a per-case shift moves that case only: not invariant
    "bn": ("BatchNorm1d (train)", "fc", (_T, _F, _T, _T, _T, _F, _F, _F)),
    # running statistics fixed: every change of the summed inputs shows; the batch does not
    "bn_eval": ("BatchNorm1d (eval)", "fc", (_F, _F, _F, _F, _F, _F, _F, _T)),
    # BN over groups of 4: as BN; each group has replaced samples, so not invariant
    "ghost": ("ghost BN (groups of 4)", "fc", (_T, _F, _T, _T, _T, _F, _F, _F)),
    # r = sigma_B / sigma, d = (mu_B - mu) / sigma unclipped: y = (a - mu) / sigma, the batch's
    # statistics cancel in the forward value, so it reads as BN in eval mode
    "renorm": ("Batch Renorm (r, d unclipped)", "fc", (_F, _F, _F, _F, _F, _F, _F, _T)),
    # Ba et al. Table 1: Invariant No Invariant No No No; no batch statistics at all
    "weight": ("weight normalisation", "fc", (_T, _F, _T, _F, _F, _F, _F, _T)),
    # Ba et al. Table 1: Invariant Invariant No Invariant No Invariant; per case: a shift of
    # all its summed inputs is removed with their mean; no batch statistics
    "layer": ("LayerNorm (features)", "fc", (_T, _T, _F, _T, _F, _T, _T, _T)),
    # the conv panels (Wu & He Fig. 2): BN2d shares (N, H, W) per channel -- as BN above
    "bn2d": ("BatchNorm2d (N, H, W)", "conv", (_T, _F, _T, _T, _T, _F, _F, _F)),
    # per (channel, position) over N: as BN (every transform here is uniform over positions)
    "activation": ("per-activation BN (N)", "conv", (_T, _F, _T, _T, _T, _F, _F, _F)),
    # per (sample, channel) over (H, W): scale and shift per channel or per case are constant
    # on each set; re-centering the weights adds v.x(h, w), which varies over positions
    "instance": ("InstanceNorm2d (H, W)", "conv", (_T, _F, _T, _T, _T, _T, _T, _T)),
    # per (sample, group) over (C/G, H, W): a per-channel scale or shift differs inside a group
    "group": ("GroupNorm (C/G, H, W)", "conv", (_T, _F, _F, _T, _F, _T, _T, _T)),
    # per sample over (C, H, W): as GroupNorm with one group; re-centering varies over positions
    "layer2d": ("LayerNorm (C, H, W)", "conv", (_T, _F, _F, _T, _F, _T, _T, _T)),
}
# the cells Ba et al.'s Table 1 states (the rest are derived above)
SOURCED = {(f, t) for f in ("bn", "weight", "layer") for t in BA_COLUMNS}

TOTAL = "cells that disagree with the expected table (of 88)"
SOURCED_MISMATCH = "cells that disagree with Ba et al.'s Table 1 (of 18)"
OTHERS_BN = "BatchNorm1d (train): relative change when the other samples are replaced"
EPS_EFFECT = ("per-activation BN with PyTorch's eps 1e-5 on the noise-free images: relative "
              "change under dataset re-scaling (not judged)")


def _mismatch_stat(family: str) -> str:
    return f"{EXPECTED[family][0]}: cells that disagree (of {len(TRANSFORMS)})"


class Invariances(Experiment):
    name = "invariances"
    title = "What each normaliser is invariant to (Ba et al. 2016 Table 1; Wu & He 2018 Fig. 2)"
    source = ("Ba, Kiros & Hinton 2016, \"Layer Normalization\", sec. 5.1, Table 1; Wu & He "
              "2018, \"Group Normalization\", sec. 3.1, Fig. 2")
    claim = ("Batch norm is invariant to re-scaling the weight matrix, a weight vector and the "
             "data set and to re-centering the data set, not to re-centering the weights or "
             "re-scaling one training case; weight normalisation only to the weight "
             "re-scalings; layer norm to re-scaling and re-centering the weight matrix and to "
             "re-scaling the data set or one case, not to a weight vector's scale or the data "
             "set's centre (Table 1). BN, LN, IN and GN differ only in which elements of an "
             "(N, C, H*W) block share one mean and variance (Fig. 2), which decides the rest.")
    quick_scale = 1.0
    same_at_paper = "the invariances are properties of the formulas, not of a network's size."
    criteria = (
        Criterion("the measured table matches Ba et al.'s Table 1 (18 cells)", SOURCED_MISMATCH,
                  0, "<=", role="demonstration"),
        *(Criterion(f"{label}: as its statistics imply", _mismatch_stat(f), 0, "<=",
                    role="demonstration") for f, (label, _, _) in EXPECTED.items()),
    )
    published = (
        Published("Ba, Kiros & Hinton 2016", "sec. 5.1, Table 1",
                  "invariance under weight and data transformations (Invariant / No)",
                  "Batch norm: Invariant, No, Invariant, Invariant, Invariant, No; Weight "
                  "norm: Invariant, No, Invariant, No, No, No; Layer norm: Invariant, "
                  "Invariant, No, Invariant, No, Invariant (columns: weight matrix "
                  "re-scaling, weight matrix re-centering, weight vector re-scaling, dataset "
                  "re-scaling, dataset re-centering, single training case re-scaling)",
                  "derived from the formulas (no experiment)", SOURCED_MISMATCH,
                  comparable="the same six transformations of a fully connected layer's "
                             "weights and data, measured on real images"),
        Published("Wu & He 2018", "sec. 3.1, Fig. 2",
                  "which elements of an (N, C, H, W) feature map share one mean and variance",
                  "BN: (N, H, W) per channel; LN: (C, H, W) per sample; IN: (H, W) per sample "
                  "and channel; GN: (C/G, H, W) per sample and group (drawn with 2 groups of "
                  "3 channels)", "a drawing", None, qualitative=True,
                  comparable="our figure measures the same sets by perturbing one element"),
    )
    definitions = (f"Change = max |y' - y| / max |y| over the compared outputs (the other "
                   f"samples replaced: the odd samples replaced, the even ones compared); "
                   f"invariant below {INVARIANT:g}, not invariant above {CHANGED:g}, between "
                   f"them ambiguous (a disagreement with either answer). eps = {EPS:g} in every "
                   f"layer: "
                   f"the invariances are the formulas' as eps -> 0; with eps 1e-5 they hold "
                   f"only where a statistic's variance is far above eps (the eps statistic "
                   f"shows one such case). Every part is a "
                   f"demonstration: the invariances follow from the formulas, so the measured "
                   f"table checks normlab's layers against the sources' table and cannot show "
                   f"an empirical effect; the claim reads 'demonstrated' at best.")
    pilot_seeds = ("seeds 100-101 (digits and mnist5k, quick size, 2026-12-07), for the "
                   "thresholds only")
    design_changes = (
        DesignChange("eps 1e-5 -> 1e-10 in every layer of the table",
                     "2026-12-07, after the pilot seeds 100-101 (digits, quick size)",
                     "with 1e-5, ghost BN over 2 samples and per-activation BN over 8 read as "
                     "not scale-invariant: some of their statistics are over near-constant "
                     "values (MNIST's background pixels), whose variance is comparable to eps; "
                     "the sources' invariances are the formulas' (eps -> 0). The 1e-5 effect "
                     "is kept as a reported statistic"),
        DesignChange(f"N(0, {NOISE:g}^2) noise added to the standardised pixels",
                     "2026-12-07, after the pilot seeds 100-101 with eps 1e-10 (digits)",
                     "ghost BN over 2 samples still read as not scale-invariant on seed 100: "
                     "two images whose summed input differed by 4e-4 in one unit (a variance "
                     "of 4e-8, within 400x of eps); the noise keeps every variance above "
                     "~1e-3"),
        DesignChange("ghost BN groups of 2 -> 4",
                     "2026-12-07, after the pilot seeds 100-103 (mnist5k)",
                     "BN over 2 samples maps each unit to +-1 by the sign of their difference, "
                     "so any change that keeps the order (a per-case re-scaling, on seed 101) "
                     "reads as invariant: a degenerate case, not the ghost BN of Hoffer et al."),
        DesignChange("LayerNorm split into a fully connected row (Ba et al.'s) and a conv row "
                     "over (C, H, W)",
                     "2026-12-07, while writing the expected table, before any run",
                     "in a convolution, re-centering the weight matrix adds v.x(h, w), which "
                     "differs between positions; LN over (C, H, W) removes one mean per "
                     "sample, so it is not invariant there, though Ba et al.'s LN is"),
    )

    def setup(self, data: Dataset, scale: float, size: str = "full") -> str:
        return (f"{N} test images of {data.describe()} (a fresh draw per seed), standardised "
                f"once, plus N(0, {NOISE:g}^2) pixel noise (so that no statistic is over "
                f"constant background pixels, where any eps dominates). Fully connected: each "
                f"image average-pooled to 4x4 = {FC_IN} features, "
                f"W ({UNITS} x {FC_IN}) N(0, 1/{FC_IN}); conv: {CONV_IN} images per sample as "
                f"channels, each pooled to {SIDE}x{SIDE}, a 1x1 convolution W ({UNITS} x "
                f"{CONV_IN}). Transformations: W -> 2.5 W; W -> W + 1 v^T; row c of W times "
                f"d_c in [0.5, 3]; x -> 2.5 x; x -> x + u (every sample); sample n times d_n "
                f"in [0.5, 3]; sample n's summed inputs + s_n; the odd samples replaced by "
                f"other images. Eval-mode BN and Batch Renorm hold the clean batch's "
                f"statistics; Batch Renorm r_max = d_max = 1e6 (unclipped), momentum 0. All "
                f"layers float32, eps {EPS:g}, gamma 1, beta 0.")

    def scale_note(self, data: Dataset, scale: float, size: str = "full") -> str:
        return f"{N} real images, 11 normalisers x {len(TRANSFORMS)} transformations"

    def runs(self, data: Dataset, scale: float, size: str = "full") -> list[Run]:
        return [Run("table", {"n": N}, "the invariance table and the shared-statistics map")]

    def run(self, ctx: RunContext, cfg: dict) -> dict:
        ctx.numpy_only("a table of normlab's own layers; no model is trained")
        x_test = parts(ctx.data).test.x
        rng = ctx.rng("draw")
        idx = rng.choice(len(x_test), 4 * N * CONV_IN, replace=False)
        clean = _standardise(x_test[idx])
        images = clean + rng.normal(0.0, NOISE, size=clean.shape).astype(np.float32)
        fc = _Block("fc", images, rng)
        conv = _Block("conv", images, rng)
        conv_clean = _Block("conv", clean, ctx.rng("clean"))
        change = {}
        for family, (_, framing, _) in EXPECTED.items():
            block = fc if framing == "fc" else conv
            change[family] = {t: block.change(family, t) for t in TRANSFORMS}
        shared = {f: conv.shared(f).tolist() if EXPECTED[f][1] == "conv" else
                  fc.shared(f).tolist() for f in EXPECTED}
        ctx.report(1, 1)
        return {"change": change, "shared": shared,
                "eps_effect": conv_clean.change("activation", "x_scale", eps=1e-5)}

    def statistics(self, runs: list[Run], metrics: Metrics) -> dict[str, float]:
        change = metrics["table"]["change"]
        wrong = {f: [t for i, t in enumerate(TRANSFORMS)
                     if not _agrees(change[f][t], EXPECTED[f][2][i])] for f in EXPECTED}
        out = {TOTAL: sum(len(w) for w in wrong.values()),
               SOURCED_MISMATCH: sum(t in wrong[f] for f, t in SOURCED)}
        out.update({_mismatch_stat(f): len(w) for f, w in wrong.items()})
        out[OTHERS_BN] = change["bn"]["others"]
        out[EPS_EFFECT] = metrics["table"]["eps_effect"]
        return out

    def rows(self, runs: list[Run], metrics: Metrics) -> list[dict]:
        change = metrics["table"]["change"]
        return [{"normaliser": EXPECTED[f][0], "transformation": TRANSFORMS[t],
                 "relative_change": change[f][t], "expected_invariant": EXPECTED[f][2][i],
                 "from_table_1": (f, t) in SOURCED}
                for f in EXPECTED for i, t in enumerate(TRANSFORMS)]

    def describe(self, runs: list[Run], by_seed) -> dict:
        first = by_seed[min(by_seed)]["table"]["change"]
        out = {}
        for f, (label, _, expected) in EXPECTED.items():
            cells = [f"{'I' if _agrees(first[f][t], True) else 'No'}"
                     f"{'' if _agrees(first[f][t], expected[i]) else ' (!)'}"
                     for i, t in enumerate(TRANSFORMS)]
            out[f"table row, {label} (first seed; columns as TRANSFORMS)"] = ", ".join(cells)
        return out

    def figures(self, runs, by_seed, summary) -> dict:
        import matplotlib.pyplot as plt
        from matplotlib.colors import LogNorm

        first = by_seed[min(by_seed)]["table"]
        fams = list(EXPECTED)
        worst = np.array([[max(by_seed[s]["table"]["change"][f][t] for s in by_seed)
                           for t in TRANSFORMS] for f in fams])
        fig, ax = plt.subplots(figsize=(11, 5.4), layout="constrained")
        im = ax.imshow(np.clip(worst, 1e-8, 10), norm=LogNorm(1e-8, 10), cmap="viridis")
        for i, f in enumerate(fams):
            for j, t in enumerate(TRANSFORMS):
                exp = EXPECTED[f][2][j]
                ok = _agrees(worst[i, j], exp)
                mark = ("I" if exp else "No") + ("*" if (f, t) in SOURCED else "")
                ax.text(j, i, mark if ok else mark + "!", ha="center", va="center",
                        color="white" if worst[i, j] < 1e-3 else "black", fontsize="small")
        ax.set_xticks(range(len(TRANSFORMS)), [TRANSFORMS[t].split(" (")[0] for t in TRANSFORMS],
                      rotation=30, ha="right", fontsize="small")
        ax.set_yticks(range(len(fams)), [EXPECTED[f][0] for f in fams], fontsize="small")
        fig.colorbar(im, ax=ax, label="relative output change (largest over seeds)")
        ax.set_title("Invariance table: expected I(nvariant) / No; * = Ba et al. Table 1; "
                     "! = measured disagrees", fontsize="small")
        axes_fig, axes = plt.subplots(1, 6, figsize=(15, 3.4), layout="constrained")
        for ax, f in zip(axes, ("bn2d", "layer2d", "instance", "group", "activation", "ghost"),
                         strict=True):
            grid = np.asarray(first["shared"][f])        # N x C: share of positions
            ax.imshow(grid, cmap="Blues", vmin=0, vmax=1)
            ax.set(title=EXPECTED[f][0], xlabel="C (channel)", ylabel="N (sample)")
            ax.set_xticks(range(UNITS))
            ax.set_yticks(range(N))
            for (n, c), v in np.ndenumerate(grid):
                if v:
                    ax.text(c, n, f"{v:.2f}" if v < 1 else "", ha="center", va="center",
                            fontsize="xx-small")
        axes_fig.suptitle("Elements that share one mean and variance with element (N 0, C 0, "
                          "position 0), measured by perturbing it; shade = share of the H*W "
                          "positions (Wu & He Fig. 2)", fontsize="small")
        return {"table": fig, "axes": axes_fig}


def _agrees(change: float, invariant: bool) -> bool:
    return change <= INVARIANT if invariant else change >= CHANGED


def _standardise(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return ((x - x.mean()) / x.std()).astype(np.float32)


def _pool(img: np.ndarray, side: int) -> np.ndarray:
    """(M, H, W) -> (M, side, side) by block averaging (H divisible by side, else cropped)."""
    m, h, w = img.shape
    k = h // side
    img = img[:, :k * side, :k * side]
    return img.reshape(m, side, k, side, k).mean(axis=(2, 4))


class _Block:
    """One layer's input, weights and transformed variants, in one framing."""

    def __init__(self, framing: str, images: np.ndarray, rng: np.random.Generator):
        self.framing = framing
        if framing == "fc":
            side = int(round(FC_IN ** 0.5))
            flat = _pool(images, side).reshape(len(images), FC_IN)
            self.x, self.spare = flat[:N], flat[N:2 * N]
            c_in = FC_IN
        else:
            pooled = _pool(images, SIDE).reshape(-1, CONV_IN, SIDE * SIDE)
            self.x, self.spare = pooled[:N], pooled[N:2 * N]
            c_in = CONV_IN
        self.w = (rng.normal(size=(UNITS, c_in)) / np.sqrt(c_in)).astype(np.float32)
        self.v = rng.normal(size=c_in).astype(np.float32)
        self.u = rng.normal(size=c_in).astype(np.float32)
        self.d_unit = rng.uniform(0.5, 3.0, size=UNITS).astype(np.float32)
        self.d_case = rng.uniform(0.5, 3.0, size=N).astype(np.float32)
        self.s_case = rng.normal(0.0, 2.0, size=N).astype(np.float32)

    def summed(self, w: np.ndarray, x: np.ndarray) -> np.ndarray:
        """a = W x: (N, units) or (N, channels, positions)."""
        if self.framing == "fc":
            return x @ w.T
        return np.einsum("ck,nkp->ncp", w, x)

    def variant(self, t: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(weights, summed inputs, which samples to compare) after transformation ``t``."""
        w, x, keep = self.w, self.x, np.arange(N)
        case = (slice(None),) + (None,) * (x.ndim - 1)
        if t == "w_scale":
            w = 2.5 * w
        elif t == "w_center":
            w = w + self.v[None, :]
        elif t == "w_vector":
            w = self.d_unit[:, None] * w
        elif t == "x_scale":
            x = 2.5 * x
        elif t == "x_center":
            x = x + (self.u if self.framing == "fc" else self.u[:, None])
        elif t == "case_scale":
            x = self.d_case[case] * x
        elif t == "others":
            x = x.copy()
            x[1::2] = self.spare[1::2]
            keep = np.arange(0, N, 2)
        a = self.summed(w, x)
        if t == "case_shift":
            a = a + self.s_case[case]
        return w, a, keep

    def output(self, family: str, w: np.ndarray, a: np.ndarray, eps: float = EPS) -> np.ndarray:
        """The normaliser's output on summed inputs ``a`` (float32, train mode unless eval)."""
        if family == "weight":
            return a / np.linalg.norm(w, axis=1)[None, :]
        layer = self._layer(family, eps)
        clean = self.summed(self.w, self.x)
        if family == "renorm":
            layer.running_mean[...] = clean.mean(axis=0)
            layer.running_var[...] = clean.var(axis=0)
        if family == "bn_eval":
            layer.train()
            layer(clean)            # momentum None: the running statistics become the batch's
            layer.eval()
        else:
            layer.train()
        if self.framing == "conv":
            img = a.reshape(len(a), UNITS, SIDE, SIDE)
            return np.asarray(layer(img)).reshape(a.shape)
        return np.asarray(layer(a))

    @staticmethod
    def _layer(family: str, eps: float) -> nn.Module:
        if family == "bn":
            return nn.BatchNorm1d(UNITS, eps=eps)
        if family == "bn_eval":
            return nn.BatchNorm1d(UNITS, eps=eps, momentum=None)
        if family == "ghost":
            return nn.BatchNorm1d(UNITS, eps=eps, virtual_batch_size=GHOST)
        if family == "renorm":
            return nn.BatchRenorm1d(UNITS, eps=eps, momentum=0.0, r_max=1e6, d_max=1e6)
        if family == "layer":
            return nn.LayerNorm(UNITS, eps=eps)
        if family == "bn2d":
            return nn.BatchNorm2d(UNITS, eps=eps)
        if family == "activation":
            return ActivationBatchNorm(UNITS, SIDE, SIDE, eps=eps)
        if family == "instance":
            return nn.InstanceNorm2d(UNITS, eps=eps, affine=True)
        if family == "group":
            return nn.GroupNorm(GROUPS, UNITS, eps=eps)
        if family == "layer2d":
            return nn.GroupNorm(1, UNITS, eps=eps)
        raise ValueError(f"family: expected one of {list(EXPECTED)}, got {family!r}")

    def change(self, family: str, t: str, eps: float = EPS) -> float:
        """max |y' - y| / max |y| over the compared samples."""
        y = self.output(family, self.w, self.summed(self.w, self.x), eps)
        w, a, keep = self.variant(t)
        y2 = self.output(family, w, a, eps)
        return float(np.max(np.abs(y2[keep] - y[keep])) / max(np.max(np.abs(y[keep])), 1e-30))

    def shared(self, family: str) -> np.ndarray:
        """(N, units): share of positions whose output moves when element (0, 0, 0) of the
        summed inputs is perturbed -- the elements that share its mean and variance."""
        a = self.summed(self.w, self.x)
        y = self.output(family, self.w, a)
        first = (0, 0) + (0,) * (a.ndim - 2)
        moved = np.zeros(a.shape, dtype=bool)
        # two bumps: an output that one bump leaves in place by chance (it sits where the old
        # and the new normalisation cross) moves under the other
        for bump in (3.0, -2.0):
            bumped = a.copy()
            bumped[first] += bump
            moved |= np.abs(self.output(family, self.w, bumped) - y) > 1e-5
        moved[first] = True
        return moved.reshape(N, UNITS, -1).mean(axis=2)
