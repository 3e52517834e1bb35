"""
For PyTorch users: freeze, fold, sync, check
============================================

``normlab.torch`` adds the BN tools ``torch.nn`` lacks, as drop-in modules and functions.
This tutorial uses them on a small ResNet written here in the style of torchvision's (basic
blocks of conv-BN-ReLU, a 1x1 conv + BN shortcut when the shape changes):
:func:`~normlab.torch.freeze_bn` for fine-tuning, :func:`~normlab.torch.fold_bn` for
inference, :class:`~normlab.torch.SyncBatchNorm` on CPU, and :func:`~normlab.torch.bn_health`
to find BN mistakes.
"""

# %%
# A torchvision-style model
# -------------------------
import time

import matplotlib.pyplot as plt
import torch
from torch import nn

import normlab.torch as nt

torch.manual_seed(0)
torch.set_num_threads(1)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + shortcut)


def small_resnet() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                         BasicBlock(16, 16), BasicBlock(16, 32, 2), BasicBlock(32, 64, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


model = small_resnet()
images = torch.randn(256, 3, 32, 32) * 1.5 + 0.5
with torch.no_grad():                      # a few training-mode passes: real running statistics
    for batch in images.split(32):
        model(batch)
model.eval()
print(sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()), "BatchNorm2d layers")

# %%
# freeze_bn: fine-tune without touching BN
# ----------------------------------------
# Fine-tuning with small batches, the batch statistics are noisy and the running statistics
# drift. :func:`~normlab.torch.freeze_bn` replaces every plain BN by a
# :class:`~normlab.torch.FrozenBatchNorm2d` that always uses the stored statistics (what
# detection models do with their pretrained backbone), even in ``model.train()``.
import copy

frozen = nt.freeze_bn(copy.deepcopy(model))
with torch.no_grad():
    gap = (frozen.train()(images[:8]) - model(images[:8])).abs().max()   # model is in eval()
same = bool(gap < 1e-5)
print(f"frozen model in train() vs original in eval(): max difference {gap:.1e} "
      "(one multiply-add instead of BN's formula: float32 rounding)")
before = frozen[1].running_mean.clone()
opt = torch.optim.SGD(frozen.parameters(), lr=0.01)
loss = frozen(images[:4]).logsumexp(dim=1).mean()
loss.backward()
opt.step()
print(type(frozen[1]).__name__, "- running mean unchanged by a training step:",
      torch.equal(before, frozen[1].running_mean))
assert same and torch.equal(before, frozen[1].running_mean)

# %%
# fold_bn: inference without BN
# -----------------------------
# In eval mode each BN is a per-channel multiply and add, which merges into the convolution
# before it (tutorial 4). :func:`~normlab.torch.fold_bn` traces the model with ``torch.fx``,
# so it finds conv -> BN pairs inside custom blocks too, and returns a folded copy and a
# report. :func:`~normlab.torch.count_bn_ops` counts the BN operations a forward runs.
folded, report = nt.fold_bn(model)
print(report.summary())
x = images[:64]
with torch.no_grad():
    ref, out = model(x), folded(x)
print("BN operations per forward: before", nt.count_bn_ops(model, x), "after",
      nt.count_bn_ops(folded, x))
print(f"max |folded - original| = {(out - ref).abs().max():.2e}")
torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def best_time(m: nn.Module, repeats: int = 10) -> float:
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats):
            t0 = time.perf_counter()
            m(x)
            best = min(best, time.perf_counter() - t0)
    return best


t_bn, t_folded = [], []
for _ in range(3):                                 # interleaved rounds, best of each
    t_bn.append(best_time(model))
    t_folded.append(best_time(folded))
t_bn, t_folded = min(t_bn), min(t_folded)
print(f"eval forward of 64 images, one thread: {1e3 * t_bn:.1f} ms with BN, "
      f"{1e3 * t_folded:.1f} ms folded: {t_bn / t_folded:.2f}x")
fig, ax = plt.subplots(figsize=(5, 2.6))
ax.barh(["with BN", "BN folded"], [1e3 * t_bn, 1e3 * t_folded], color=["tab:blue", "tab:green"])
ax.set_xlabel("ms per eval forward (64 images, measured at build time)")
ax.invert_yaxis()
fig.tight_layout()

# %%
# How much folding saves depends on how much of the forward BN takes: in PyTorch eager on a
# CPU, each eval-mode BN is one pass over its input beside a convolution's arithmetic, and
# the folded model makes 9 layer calls fewer. The times above were measured while this page
# was built, on whatever machine built it and under whatever load it had (best of 10 calls,
# in 3 interleaved rounds); on a busy machine they vary from build to build. The NumPy
# engine's fold is in tutorial 4.
#
# ``fold_bn`` also handles timm's fused norm+activation layers, frozen and synced BNs; BNs it
# cannot fold (a BN whose input feeds two layers, a BN before a zero-padded conv) are listed
# with the reason. ``normlab fold MODEL -o OUT`` does the same for a saved model.
#
# SyncBatchNorm on CPU
# --------------------
# Data-parallel training splits each batch across processes; plain BN then normalises each
# process's share with its own statistics. :class:`~normlab.torch.SyncBatchNorm` gathers every
# process's (count, mean, sum of squared deviations) and merges them (Chan et al. 1979), so
# each process normalises with the statistics of the whole batch — on CPU too (gloo), where
# ``torch.nn.SyncBatchNorm`` needs CUDA. The merge, done here by hand for two halves of one
# batch:
xb = torch.randn(12, 4, 5, 5, dtype=torch.float64)
halves = xb[:6], xb[6:]
n = [h[:, 0].numel() for h in halves]
means = [h[:, 0].mean() for h in halves]
m2 = [((h[:, 0] - mu) ** 2).sum() for h, mu in zip(halves, means, strict=True)]
mean = (n[0] * means[0] + n[1] * means[1]) / sum(n)
var = (m2[0] + m2[1] + sum(k * (mu - mean) ** 2 for k, mu in zip(n, means, strict=True))) / sum(n)
print(f"channel 0, merged from two halves: mean {mean:.6f}, var {var:.6f}; whole batch: mean "
      f"{xb[:, 0].mean():.6f}, var {xb[:, 0].var(unbiased=False):.6f}")
print(f"each half alone: means {means[0]:.3f} and {means[1]:.3f}")
torch.testing.assert_close(var, xb[:, 0].var(unbiased=False))

# %%
# Outside a process group (as here) :class:`~normlab.torch.SyncBatchNorm` is plain BN, and
# :func:`~normlab.torch.convert_sync_batchnorm` swaps it in for every BN of a model:
synced = nt.convert_sync_batchnorm(copy.deepcopy(model)).train()
plain = copy.deepcopy(model).train()
with torch.no_grad():
    torch.testing.assert_close(synced(images[:16]), plain(images[:16]))
print(sum(isinstance(m, nt.SyncBatchNorm) for m in synced.modules()), "SyncBatchNorm layers")

# %%
# Running it on two processes needs a process group. This page shows that part as code rather
# than running it: the worker function must be importable by the spawned processes (a
# tutorial script is not), and a documentation build should not open ports or spawn
# processes. Saved as a file and run, it prints ``0 True`` and ``1 True``;
# ``tests/torch/test_torch_sync.py`` runs the same and checks that two processes give the outputs,
# gradients and running statistics of one BN over the whole batch.
#
# .. code-block:: python
#
#     # sync_demo.py -- run with: python sync_demo.py
#     import torch, torch.distributed as dist, torch.multiprocessing as mp
#     import normlab.torch as nt
#
#     def worker(rank, world):
#         dist.init_process_group("gloo", init_method="tcp://127.0.0.1:29511",
#                                 rank=rank, world_size=world)
#         torch.manual_seed(0)
#         x = torch.randn(16, 4, 8, 8)                 # the same whole batch on every rank
#         bn = nt.SyncBatchNorm(4)
#         y = bn(x.chunk(world)[rank])                 # each rank normalises its half ...
#         whole = torch.nn.functional.batch_norm(x, None, None, training=True)
#         print(rank, torch.allclose(y, whole.chunk(world)[rank], atol=1e-5))  # ... as the whole
#         dist.destroy_process_group()
#
#     if __name__ == "__main__":
#         mp.spawn(worker, args=(2,), nprocs=2)
#
# ``normlab reproduce --engine torch --workers 2 --sync-bn`` trains the experiments this way.
#
# bn_health: a check-up
# ---------------------
# :func:`~normlab.torch.bn_health` runs a few batches through a model (restoring its state
# afterwards) and reports, per BN, what commonly goes wrong. Three mistakes at once: the
# model is left in training mode, the data at inference are brighter than in training
# (stale running statistics), and a convolution with a bias feeds a BN (the mean subtraction
# cancels the bias; note 000: "remove the bias of the fully connected layer").
sick = small_resnet()
sick[0] = nn.Conv2d(3, 16, 3, 1, 1, bias=True)
with torch.no_grad():
    for batch in images.split(32):
        sick(batch)
shifted_loader = [(images[i:i + 32] * 0.5 + 2.0, None) for i in range(0, 128, 32)]
health = nt.bn_health(sick, shifted_loader, num_batches=4)       # sick is still in train()
for layer in health.layers[:2]:
    print(f"{layer.name}: mean gap {layer.mean_gap:.2f} running stds, var ratio "
          f"{layer.var_ratio:.2f}")
    for text in layer.suggestions:
        print("   -", text)
sick.eval()
recalibrated = nt.recalibrate_bn(sick, shifted_loader)
after = nt.bn_health(sick, shifted_loader, num_batches=4)
print(f"after model.eval() and recalibrate_bn ({recalibrated} batches): worst mean gap "
      f"{max(h.mean_gap for h in after.layers):.2f}, suggestions left: "
      f"{sorted({s.split(':')[0] for h in after.layers for s in h.suggestions})}")
