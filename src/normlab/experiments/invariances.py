"""Ba, Kiros & Hinton 2016, Table 1, and Wu & He 2018, Fig. 2: what each normaliser is invariant
to, and which elements share one mean and variance.

Every normaliser sees the summed inputs ``a = W x`` of one layer (the framing of Ba et al. sec.
5.1, eq. 5), for a batch of 8 real images, and is run with its affine parameters at their
initial values (gamma 1, beta 0). Each transformation of the weights, of the data or of the
batch is applied, and the output's largest change relative to the output's largest value is
measured; below :data:`INVARIANT` counts as invariant, above :data:`CHANGED` as not (between
the two: ambiguous, which disagrees with any table). Two framings:

* a fully connected layer (16 input features, 6 units): BN, BN in eval mode, ghost BN (groups
  of 4), Batch Renorm with r and d unclipped, weight normalisation, LayerNorm and RMSNorm --
  the columns of Ba et al.'s Table 1, normlab's BatchNorm relatives and LayerNorm's
  re-scaling-only simplification (Zhang & Sennrich 2019);
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

from ..data import Dataset
from ..runner.base import Experiment, Metrics, Run, RunContext
from ..runner.design import DesignChange
from ..runner.evidence import Criterion, Published
from ..runner.holdout import parts
from .invariance_cases import (
    CHANGED,
    CONV_IN,
    EPS,
    EXPECTED,
    FC_IN,
    INVARIANT,
    NOISE,
    SIDE,
    SOURCED,
    TRANSFORMS,
    UNITS,
    Block,
    N,
    agrees,
    standardise,
)

TOTAL = f"cells that disagree with the expected table (of {len(EXPECTED) * len(TRANSFORMS)})"
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
        DesignChange("RMSNorm row added (fully connected framing)",
                     "2026-12-07, with the layer (issue 28), before any run of the row",
                     "the family registry's first new family; its expected row follows from "
                     "its one statistic (Zhang & Sennrich 2019 sec. 4), as the other derived "
                     "rows do"),
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
        return (f"{N} real images, {len(EXPECTED)} normalisers x {len(TRANSFORMS)} "
                f"transformations")

    def runs(self, data: Dataset, scale: float, size: str = "full") -> list[Run]:
        return [Run("table", {"n": N}, "the invariance table and the shared-statistics map")]

    def run(self, ctx: RunContext, cfg: dict) -> dict:
        ctx.numpy_only("a table of normlab's own layers; no model is trained")
        x_test = parts(ctx.data).test.x
        rng = ctx.rng("draw")
        idx = rng.choice(len(x_test), 4 * N * CONV_IN, replace=False)
        clean = standardise(x_test[idx])
        images = clean + rng.normal(0.0, NOISE, size=clean.shape).astype(np.float32)
        fc = Block("fc", images, rng)
        conv = Block("conv", images, rng)
        conv_clean = Block("conv", clean, ctx.rng("clean"))
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
                     if not agrees(change[f][t], EXPECTED[f][2][i])] for f in EXPECTED}
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
            cells = [f"{'I' if agrees(first[f][t], True) else 'No'}"
                     f"{'' if agrees(first[f][t], expected[i]) else ' (!)'}"
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
                ok = agrees(worst[i, j], exp)
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
