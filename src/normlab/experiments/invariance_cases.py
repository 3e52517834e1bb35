"""The invariance table's cases: the transformations, the normalisers, the expected table, and
one layer's input and weights in either framing (Ba, Kiros & Hinton 2016 sec. 5.1, Table 1;
Wu & He 2018 Fig. 2). :mod:`.invariances` runs them and reports the table; the expected values
and their derivations are explained in its docstring and beside each row here.
"""

from __future__ import annotations

import numpy as np

from .. import nn
from ..engines.numpy_layers import ActivationBatchNorm

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
    # RMSNorm (Zhang & Sennrich 2019 sec. 4: re-scaling invariance without re-centering): per
    # case, one root mean square over the units: every per-case re-scaling cancels; a shift,
    # per case or per unit, and a per-unit scale do not
    "rms": ("RMSNorm (features)", "fc", (_T, _F, _F, _T, _F, _T, _F, _T)),
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


def agrees(change: float, invariant: bool) -> bool:
    return change <= INVARIANT if invariant else change >= CHANGED


def standardise(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return ((x - x.mean()) / x.std()).astype(np.float32)


def _pool(img: np.ndarray, side: int) -> np.ndarray:
    """(M, H, W) -> (M, side, side) by block averaging (H divisible by side, else cropped)."""
    m, h, w = img.shape
    k = h // side
    img = img[:, :k * side, :k * side]
    return img.reshape(m, side, k, side, k).mean(axis=(2, 4))


class Block:
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
        if family == "rms":
            return nn.RMSNorm(UNITS, eps=eps)
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
