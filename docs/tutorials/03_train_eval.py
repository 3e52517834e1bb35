"""
Train vs eval: running averages and their pitfalls
==================================================

In training, BN normalises each batch with that batch's mean and variance (Algorithm 1). At
inference there may be one sample, so BN uses fixed estimates instead: running averages
collected during training (Algorithm 2; note 003, "training vs inference"). This tutorial
shows the two momentum conventions, what goes wrong when a model is evaluated in training
mode, and how to recalibrate stale running statistics.
"""

# %%
# Two conventions for the same average
# ------------------------------------
# DLfS (note 001) writes ``running = momentum * running + (1 - momentum) * batch`` with
# momentum 0.9: the weight of the *old* value. PyTorch and normlab write
# ``running = (1 - momentum) * running + momentum * batch`` with momentum 0.1: the weight of
# the *new* value. Same average. Two other differences remain: DLfS starts running_var at 0
# and averages the biased batch variance; PyTorch starts it at 1 and averages the unbiased one
# (m / (m - 1) times the biased).
import matplotlib.pyplot as plt
import numpy as np

from normlab import nn

rng = np.random.default_rng(0)
m, steps = 16, 60
batches = [rng.normal(3.0, 2.0, (m, 1)) for _ in range(steps)]     # true mean 3, variance 4

dlfs_mean, dlfs_var, momentum_dlfs = np.zeros(1), np.zeros(1), 0.9
layer = nn.BatchNorm1d(1, momentum=0.1, dtype=np.float64)
history = []
for xb in batches:
    mu, var = xb.mean(axis=0), xb.var(axis=0)
    dlfs_mean = momentum_dlfs * dlfs_mean + (1 - momentum_dlfs) * mu
    dlfs_var = momentum_dlfs * dlfs_var + (1 - momentum_dlfs) * var
    layer(xb)                                          # training mode: updates the buffers
    history.append((dlfs_mean[0], dlfs_var[0], layer.running_mean[0], layer.running_var[0]))
history = np.array(history)
print("after", steps, "batches: DLfS mean/var", history[-1, :2].round(3),
      " normlab (= PyTorch) mean/var", history[-1, 2:].round(3))
np.testing.assert_allclose(history[:, 0], history[:, 2])   # the means follow the same average

fig, axes = plt.subplots(1, 2, figsize=(9, 3))
axes[0].plot(history[:, 0], label="DLfS, momentum 0.9")
axes[0].plot(history[:, 2], "--", label="PyTorch/normlab, momentum 0.1")
axes[0].axhline(3.0, color="k", lw=0.8)
axes[0].set_title("running mean (true 3)")
axes[1].plot(history[:, 1], label="DLfS: from 0, biased")
axes[1].plot(history[:, 3], "--", label="PyTorch: from 1, unbiased")
axes[1].axhline(4.0, color="k", lw=0.8)
axes[1].set_title("running variance (true 4)")
for ax in axes:
    ax.set_xlabel("training step")
    ax.legend()
fig.tight_layout()

# %%
# Both averages forget at the same rate: after k steps the start value still weighs
# 0.9^k (0.9^20 = 12%), which is why a model evaluated after a few hundred steps is fine.
#
# A small model on real digits
# ----------------------------
# The UCI 8x8 digits shipped with normlab (:func:`normlab.data.load`), a 64-100-10 MLP with
# BN, trained for a few hundred steps:
from normlab import data, optim

ds = data.load("digits")
x_train, y_train = ds.flat("train")
x_test, y_test = ds.flat("test")
model = nn.Sequential(nn.Linear(64, 100, bias=False), nn.BatchNorm1d(100), nn.ReLU(),
                      nn.Linear(100, 10))
loss_fn = nn.CrossEntropyLoss()
opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
for _ in range(400):
    idx = rng.choice(len(x_train), 32, replace=False)
    loss_fn(model(x_train[idx]), y_train[idx])
    model.backward(loss_fn.backward())
    opt.step()
    opt.zero_grad()


def accuracy(batch_size: int, order=None) -> float:
    """Test accuracy evaluating ``batch_size`` images per forward call, in ``order``."""
    order = np.arange(len(x_test)) if order is None else order
    hits = 0
    for start in range(0, len(order), batch_size):
        i = order[start:start + batch_size]
        hits += int((model(x_test[i]).argmax(axis=1) == y_test[i]).sum())
    return hits / len(order)


model.eval()
acc_eval = accuracy(256)
print(f"eval mode: test accuracy {acc_eval:.3f}")

# %%
# ``model.train()`` left on
# -------------------------
# In training mode each batch is normalised with its own statistics, so a sample's prediction
# depends on which other samples are in its batch. With a large shuffled batch that is close
# to the running averages; with small batches, or with a batch of one class (a test set
# sorted by label), it is not. And every such forward also overwrites the running statistics.
saved = {k: v.copy() for k, v in model.state_dict().items()}
by_label = np.argsort(y_test, kind="stable")
results = {"eval mode": acc_eval}
model.train()
results["train mode, batches of 256"] = accuracy(256, rng.permutation(len(x_test)))
results["train mode, batches of 4"] = accuracy(4, rng.permutation(len(x_test)))
results["train mode, sorted by label"] = accuracy(50, by_label)
for name, acc in results.items():
    print(f"{name:30s} {acc:.3f}")
drift = np.abs(model.state_dict()["1.running_mean"] - saved["1.running_mean"]).max()
print(f"running_mean moved by up to {drift:.3f} during those 'evaluations'")
model.load_state_dict(saved)
model.eval()
assert results["train mode, sorted by label"] < acc_eval - 0.2

# %%
# Stale statistics and recalibration
# ----------------------------------
# Running statistics describe the activations the model saw in training. When the input
# distribution changes — here every image's contrast halved and its brightness raised, a
# different camera — the first layer's activations move and the stored statistics no longer
# match. Recalibrating re-estimates them on unlabelled new data, without touching a weight:
# reset them, switch to the cumulative average (``momentum=None``), run the new data through
# in training mode, switch back.
shifted = 0.5 * x_test + 0.4
bn = model[1]
x_keep = x_test
x_test = shifted
acc_stale = accuracy(256)
bn.reset_running_stats()
bn.momentum = None                  # cumulative average of every batch seen
model.train()
for start in range(0, len(shifted), 64):
    model(shifted[start:start + 64])
model.eval()
bn.momentum = 0.1
acc_recal = accuracy(256)
x_test = x_keep
print(f"shifted inputs: stale statistics {acc_stale:.3f}, recalibrated {acc_recal:.3f} "
      f"(original inputs {acc_eval:.3f})")
assert acc_recal > acc_stale

fig, ax = plt.subplots(figsize=(7, 3))
labels = [*results, "shifted, stale", "shifted, recalibrated"]
values = [*results.values(), acc_stale, acc_recal]
ax.barh(labels, values, color=["tab:green", "tab:orange", "tab:orange", "tab:red", "tab:red",
                               "tab:green"])
ax.set_xlim(0, 1)
ax.set_xlabel("test accuracy")
ax.invert_yaxis()
ax.set_title("The same weights, evaluated five ways")
fig.tight_layout()

# %%
# For PyTorch models, :func:`normlab.torch.recalibrate_bn` does the recalibration (and keeps
# dropout in eval mode while it runs), and :func:`normlab.torch.bn_health` finds a model left
# in training mode or with stale statistics (tutorial 6).
