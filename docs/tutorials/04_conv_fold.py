"""
Convolutions: BN per channel, and folding BN away
=================================================

Two things change when BN follows a convolution. Its statistics are taken per *channel*,
over the batch and every spatial position (Ioffe & Szegedy 2015, sec. 3.2; note 000:
"convolutional layers are normalised per channel"). And at inference BN is a fixed
per-channel multiply and add — note 000's "a single multiply and add" — which can be merged
into the convolution before it, so it costs nothing at all.
"""

# %%
# Per channel, over N, H and W
# ----------------------------
import time

import matplotlib.pyplot as plt
import numpy as np

from normlab import nn

rng = np.random.default_rng(0)
x = rng.normal(size=(8, 3, 5, 5)) * np.array([1.0, 5.0, 0.2])[:, None, None] + 2.0

bn = nn.BatchNorm2d(3, dtype=np.float64)
y = bn(x)
mu = x.mean(axis=(0, 2, 3), keepdims=True)          # one mean per channel
var = x.var(axis=(0, 2, 3), keepdims=True)
np.testing.assert_allclose(y, (x - mu) / np.sqrt(var + 1e-5), atol=1e-12)
print("per-channel mean after BN:", y.mean(axis=(0, 2, 3)).round(12))
print("per-channel var  after BN:", y.var(axis=(0, 2, 3)).round(4))
print("parameters (gamma, beta):", bn.weight.shape, bn.bias.shape)

# %%
# DLfS's ``BatchNormalization`` (note 001) reshapes a convolutional input (N, C, H, W) to
# (N, C*H*W) and so normalises every *activation* separately, with C*H*W pairs of gamma and
# beta: 2*3*5*5 = 150 parameters here instead of 6, and each statistic estimated from N = 8
# values instead of N*H*W = 200. Section 3.2 of the paper normalises per channel so that
# every position of a feature map is normalised the same way, as the convolution treats them.
flat = x.reshape(len(x), -1)
per_activation = (flat - flat.mean(axis=0)) / np.sqrt(flat.var(axis=0) + 1e-5)
print("values per statistic: per activation", len(x), " per channel", x.size // 3)
print("max |per-activation - per-channel| =",
      np.abs(per_activation.reshape(x.shape) - y).max().round(3))

# %%
# Eval-mode BN is one multiply and one add
# ----------------------------------------
# With the running statistics fixed, y = gamma * (x - mean) / sqrt(var + eps) + beta is
# y = s * x + t per channel, with s = gamma / sqrt(var + eps) and t = beta - s * mean
# (Algorithm 2, line 11). If a convolution comes first, its weights W and bias b merge:
# W' = s * W (per output channel) and b' = s * b + t. Then BN is gone.
from normlab.fold import fold_bn

model = nn.Sequential(
    nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
    nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
    nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 8 * 8, 10))
for _ in range(20):                                  # give BN real running statistics
    model(rng.normal(1.0, 2.0, (16, 3, 16, 16)).astype(np.float32))
model.eval()

folded, report = fold_bn(model)
print(report)
print(folded)

# %%
# The folded model computes the same function (up to float32 rounding):
x_eval = rng.normal(1.0, 2.0, (64, 3, 16, 16)).astype(np.float32)
ref, out = model(x_eval), folded(x_eval)
print(f"max |folded - original| = {np.abs(out - ref).max():.2e} "
      f"(outputs up to {np.abs(ref).max():.1f})")
np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())

# %%
# The speed-up, measured
# ----------------------
# Best of several timed runs of the eval forward, the original model and the folded one
# interleaved (measured when this page was built, on the machine that built it; a busy
# machine makes the numbers noisier, not the fold slower).


def best_time(f, repeats: int = 15) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(x_eval)
        times.append(time.perf_counter() - t0)
    return min(times)


t_orig, t_fold = [], []
for _ in range(3):
    t_orig.append(best_time(model))
    t_fold.append(best_time(folded))
t_orig, t_fold = min(t_orig), min(t_fold)
print(f"eval forward of 64 images: original {1e3 * t_orig:.2f} ms, folded "
      f"{1e3 * t_fold:.2f} ms, speed-up {t_orig / t_fold:.2f}x")

fig, axes = plt.subplots(1, 2, figsize=(9, 3))
axes[0].bar(["with BN", "BN folded"], [1e3 * t_orig, 1e3 * t_fold],
            color=["tab:blue", "tab:green"])
axes[0].set_ylabel("ms per forward (64 images)")
axes[0].set_title(f"eval forward: {t_orig / t_fold:.2f}x faster folded")
w = model[0].weight.data.reshape(32, -1)
w_folded = folded[0].weight.data.reshape(32, -1)
axes[1].scatter(np.abs(w).mean(axis=1), np.abs(w_folded).mean(axis=1), s=12)
axes[1].set_xlabel("mean |W| per output channel")
axes[1].set_ylabel("mean |W'| after folding")
axes[1].set_title("each channel's weights scaled by its s")
fig.tight_layout()

# %%
# How much the fold gains depends on how much of the time BN took: here two BN layers
# against two 3x3 convolutions. :func:`normlab.torch.fold_bn` does the same for PyTorch
# models (tutorial 6), and ``normlab fold MODEL -o OUT`` for a saved model file.
