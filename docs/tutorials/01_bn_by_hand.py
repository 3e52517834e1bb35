"""
BN by hand: the 4x2 example
===========================

The study notes end with a worked example: a batch of 4 samples with 2 features,

.. code-block:: text

    x = [[1, 2],
         [3, 4],
         [5, 6],
         [7, 8]]

and the first feature worked out by hand: mean 4, variance 5, and the first sample
normalised to (1 - 4) / sqrt(5 + 1e-5) = -1.34. Here it is three times — in NumPy, with
``normlab.functional`` and with ``torch.nn.BatchNorm1d`` — and the three agree.

The equations (Ioffe & Szegedy 2015, Algorithm 1), per feature over the m samples of the
batch:

.. code-block:: text

    mu      = 1/m * sum_i x_i                   batch mean
    sigma^2 = 1/m * sum_i (x_i - mu)^2          batch variance (biased: divide by m)
    x_hat   = (x - mu) / sqrt(sigma^2 + eps)    normalise
    y       = gamma * x_hat + beta              scale and shift (learned)
"""

# %%
# In NumPy, line by line
# ----------------------
import numpy as np

x = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])
eps = 1e-5
gamma, beta = np.ones(2), np.zeros(2)      # a fresh layer: gamma = 1, beta = 0

mu = x.mean(axis=0)                        # per feature: over the batch axis
var = ((x - mu) ** 2).mean(axis=0)
x_hat = (x - mu) / np.sqrt(var + eps)
y_numpy = gamma * x_hat + beta
print("mean    ", mu)
print("variance", var)
print("y\n", y_numpy.round(4))

# %%
# The note's numbers: mean 4 and variance 5 for the first feature, and -1.34 for its first
# sample. Both features get the same outputs because the second column is the first plus 1
# — normalisation removes any shift.
assert mu[0] == 4.0 and var[0] == 5.0
assert round(y_numpy[0, 0], 2) == -1.34

# %%
# With normlab.functional
# -----------------------
# :func:`normlab.functional.batch_norm_train` is the training-mode forward. It also returns a
# cache: what the backward pass needs (the next tutorial).
from normlab import functional as F

y_normlab, cache = F.batch_norm_train(x, weight=gamma, bias=beta, eps=eps)
print(y_normlab.round(4))
print("max |normlab - numpy| =", np.abs(y_normlab - y_numpy).max())
np.testing.assert_allclose(y_normlab, y_numpy, rtol=0, atol=1e-12)

# %%
# With torch.nn.BatchNorm1d
# -------------------------
# A fresh ``BatchNorm1d`` starts in training mode and normalises with the batch's statistics:
import torch

bn = torch.nn.BatchNorm1d(2, eps=eps, dtype=torch.float64)
y_torch = bn(torch.from_numpy(x)).detach().numpy()
print(y_torch.round(4))
np.testing.assert_allclose(y_torch, y_numpy, rtol=0, atol=1e-12)

# %%
# A trap in the note's snippet
# ----------------------------
# The note calls ``bn.eval()`` before its hand computation. In eval mode BN does *not* use the
# batch's mean and variance but its running estimates, which start at mean 0 and variance 1:
# a fresh layer in eval mode leaves the input almost unchanged.
bn_eval = torch.nn.BatchNorm1d(2, eps=eps, dtype=torch.float64).eval()
print(bn_eval(torch.from_numpy(x)).detach().numpy().round(4))

# %%
# The hand computation is the training-mode output. Eval mode uses running statistics that
# only training updates (tutorial 3, *Train vs eval*). One training step updates them with
# PyTorch's momentum 0.1 and the *unbiased* variance (divide by m - 1 = 3):
print("running_mean", bn.running_mean.numpy())          # 0.9 * 0 + 0.1 * [4, 5]
print("running_var ", bn.running_var.numpy())           # 0.9 * 1 + 0.1 * 20/3
np.testing.assert_allclose(bn.running_var.numpy(), 0.9 + 0.1 * 20 / 3)

# %%
# normlab's NumPy layer :class:`normlab.nn.BatchNorm1d` does the same, with the same
# state-dict keys as PyTorch:
from normlab import nn

layer = nn.BatchNorm1d(2, dtype=np.float64)
np.testing.assert_allclose(layer(x), y_numpy, atol=1e-12)
print({k: v for k, v in layer.state_dict().items() if k.startswith("running")})

# %%
# What normalisation does to a batch
# ----------------------------------
# Per feature, BN shifts the batch to mean 0 and scales it to variance 1 (before gamma and
# beta): the shapes of the two features' distributions stay, their location and scale go.
import matplotlib.pyplot as plt

rng = np.random.default_rng(0)
batch = np.column_stack([rng.normal(5.0, 3.0, 256), rng.gamma(2.0, 1.0, 256) - 8.0])
out, _ = F.batch_norm_train(batch)
fig, axes = plt.subplots(1, 2, figsize=(8, 3), sharey=True)
for ax, data, title in ((axes[0], batch, "input"), (axes[1], out, "after BN (train mode)")):
    for j, colour in enumerate(("tab:blue", "tab:orange")):
        ax.hist(data[:, j], bins=30, alpha=0.6, color=colour, label=f"feature {j}")
    ax.set_title(title)
axes[0].legend()
fig.tight_layout()
