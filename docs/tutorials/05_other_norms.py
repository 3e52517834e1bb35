"""
LN, IN, GN and RNNs: which axes, what invariance
================================================

Batch norm averages over the batch; its relatives average over parts of *one* sample (note
004; note 003's "variants of Batch Normalization"). For an (N, C, H, W) input, each norm computes a
mean and a variance over one set of values and normalises that set:

* **BatchNorm** (Ioffe & Szegedy 2015): per channel, over N, H, W — across samples;
* **LayerNorm** (Ba et al. 2016): per sample, over C, H, W;
* **InstanceNorm** (Ulyanov et al. 2016): per sample and channel, over H, W;
* **GroupNorm** (Wu & He 2018): per sample and group of channels, over the group's C/G
  channels and H, W. One group is LayerNorm, C groups is InstanceNorm.
* **RMSNorm** (Zhang & Sennrich 2019): LayerNorm's set of values, but no mean is subtracted:
  each value is divided by the root mean square of its sample (eq. 4). It keeps LN's
  invariance to re-scaling a sample and gives up the one to shifting it.
"""

# %%
# Which values share one mean and variance
# ----------------------------------------
# Each panel is the input's (N, C) grid — each cell stands for all H x W positions of one
# channel of one sample. Coloured: the values normalised together with sample 0, channel 0.
import matplotlib.pyplot as plt
import numpy as np

from normlab import functional as F
from normlab import nn

N, C, G = 6, 6, 3
masks = {"BatchNorm": np.zeros((N, C)), "LayerNorm": np.zeros((N, C)),
         "InstanceNorm": np.zeros((N, C)), f"GroupNorm ({G} groups)": np.zeros((N, C)),
         "RMSNorm": np.zeros((N, C))}
masks["BatchNorm"][:, 0] = 1
masks["LayerNorm"][0, :] = 1
masks["InstanceNorm"][0, 0] = 1
masks[f"GroupNorm ({G} groups)"][0, : C // G] = 1
masks["RMSNorm"][0, :] = 1        # LayerNorm's set: one root mean square, no mean
fig, axes = plt.subplots(1, 5, figsize=(12, 2.8))
for ax, (name, mask) in zip(axes, masks.items(), strict=True):
    ax.imshow(mask, cmap="Blues", vmin=0, vmax=1.3)
    ax.set_xticks(np.arange(-0.5, C), minor=True)
    ax.set_yticks(np.arange(-0.5, N), minor=True)
    ax.grid(which="minor", color="grey", lw=0.5)
    ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
    ax.set_xlabel("channel C")
    ax.set_title(name, fontsize=10)
axes[0].set_ylabel("sample N")
fig.suptitle("Values normalised together (each cell: all H x W positions)")
fig.tight_layout()

# %%
# What each output is invariant to
# --------------------------------
# A norm's output does not change when its input changes in a way its statistics absorb.
# Four changes of an (8, 6, 4, 4) input, and the largest change each makes to each norm's
# output (training mode, no affine parameters):
rng = np.random.default_rng(0)
x = rng.normal(size=(8, 6, 4, 4))
norms = {
    "BatchNorm": lambda v: F.batch_norm_train(v)[0],
    "LayerNorm": lambda v: F.layer_norm_forward(v, v.shape[1:])[0],
    "InstanceNorm": lambda v: F.instance_norm_forward(v)[0],
    "GroupNorm (3)": lambda v: F.group_norm_forward(v, 3)[0],
    "RMSNorm": lambda v: F.rms_norm_forward(v, v.shape[1:], eps=1e-5)[0],
}
scale_c = rng.uniform(0.5, 3, (1, 6, 1, 1))
scale_n = rng.uniform(0.5, 3, (8, 1, 1, 1))
scale_nc = rng.uniform(0.5, 3, (8, 6, 1, 1))
changes = {
    "scale and shift\neach channel\n(same for all samples)": lambda v: scale_c * v + 2 * scale_c,
    "scale each sample": lambda v: scale_n * v,
    "scale and shift\neach sample": lambda v: scale_n * v - scale_n,
    "scale and shift each\nchannel of each sample": lambda v: scale_nc * v + scale_nc,
    "replace the other\nsamples of the batch": lambda v: np.concatenate(
        [v[:1], rng.normal(size=v[1:].shape)]),
}
effect = np.zeros((len(changes), len(norms)))
for i, change in enumerate(changes.values()):
    moved = change(x)
    for j, norm in enumerate(norms.values()):
        # sample 0 is unchanged by the last change, so compare sample 0 everywhere
        effect[i, j] = np.abs(norm(moved)[0] - norm(x)[0]).max()
invariant = effect < 1e-3    # eps = 1e-5 moves outputs by less than this, a change by ~1

fig, ax = plt.subplots(figsize=(9.5, 5))
ax.imshow(invariant, cmap="RdYlGn", vmin=-0.3, vmax=1.3)
for i in range(len(changes)):
    for j in range(len(norms)):
        ax.text(j, i, "invariant" if invariant[i, j] else f"changes\n(by {effect[i, j]:.2f})",
                ha="center", va="center", fontsize=8)
ax.set_xticks(range(len(norms)), [n.replace("Norm", "\nNorm") for n in norms])
ax.set_yticks(range(len(changes)), list(changes), fontsize=8)
ax.set_title("Does sample 0's output change?")
fig.tight_layout()
print(dict(zip(norms, invariant.T.tolist(), strict=True)))

# %%
# Only BatchNorm's output for a sample depends on the *other* samples (the last row). That
# is what makes it regularise, what makes small batches hurt (the ``batch-size`` experiment)
# and why eval mode needs running statistics at all; LN, IN and GN compute the same thing in
# training and at inference. InstanceNorm throws away each image channel's contrast — wanted
# for style transfer, unwanted for classification — and GroupNorm sits between LN and IN.
# RMSNorm drops LN's mean: a sample's re-scaling is still absorbed, a shift is not.
assert invariant[0, 0] and not invariant[4, 0]            # BN: per-channel affine, not batch
assert invariant[2, 1] and invariant[4, 1]                # LN: per-sample affine, batch-free
assert invariant[3, 2] and not invariant[3, 3]            # IN absorbs more than GN
assert invariant[1, 4] and not invariant[2, 4]            # RMSNorm: scale yes, shift no

# %%
# RNNs
# ----
# In a recurrent network the same weights run at every time step, but the statistics of the
# pre-activations change from step to step, and sequences have different lengths (note 004).
# :class:`normlab.nn.LSTM` offers the published options: ``norm="layer"`` (Ba et al. 2016:
# LN of each sample's pre-activations, at every step), ``"recurrent_batch"`` (Cooijmans et
# al. 2016: BN with separate statistics per time step) and ``"sequence_batch"`` (BN of the
# input projection only, statistics over batch and time). As with images, only the BN variants
# make one sequence's output depend on the rest of the batch:
seqs = rng.normal(size=(16, 10, 8)).astype(np.float32)      # N=16 sequences, T=10, 8 inputs
others = np.concatenate([seqs[:1], rng.normal(size=(15, 10, 8)).astype(np.float32)])
for norm in ("none", "layer", "recurrent_batch", "sequence_batch"):
    lstm = nn.LSTM(8, 12, norm=norm, rng=0)
    out_a, _ = lstm(seqs)
    out_b, _ = lstm(others)
    print(f"{norm:16s} sequence 0's outputs change with its batch-mates by "
          f"{np.abs(out_a[0] - out_b[0]).max():.2e}")

# %%
# The ``rnn-norm`` experiment (``normlab reproduce rnn-norm``) trains these four LSTMs on
# MNIST rows and compares how fast they learn.
