"""What BatchNorm costs at inference, and whether folding removes all of it.

For a ResNet-style CNN in torch (CPU, eager) and a VGG-style CNN in the NumPy engine, times the
eval-mode forward of three models with the same convolutions:

* ``bn``     -- Conv -> BN -> ReLU as trained,
* ``folded`` -- the output of ``fold_bn`` (BN merged into the conv weights),
* ``no_bn``  -- the same architecture built without any BN (convs with bias),

interleaved in one process (machine noise is ~2x between runs), medians of many repeats.
BN's share of inference = (bn - no_bn) / bn; the target is folded == no_bn within noise.
Not a test: run ``python benchmarks/bench_fold.py [--quick] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np


def interleaved(fns: dict, repeats: int, inner: int) -> dict[str, float]:
    """Median seconds per call of each fn, alternating between them every round."""
    for fn in fns.values():  # warm-up (allocations, caches, lazy init)
        fn()
    samples = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            samples[name].append((time.perf_counter() - t0) / inner)
    return {k: statistics.median(v) for k, v in samples.items()}


# -- torch: ResNet-style -----------------------------------------------------------------------
def torch_resnet(with_bn: bool):
    import torch
    from torch import nn

    def norm(c):
        return nn.BatchNorm2d(c) if with_bn else nn.Identity()

    class Block(nn.Module):
        def __init__(self, c_in, c_out, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=not with_bn)
            self.bn1 = norm(c_out)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=not with_bn)
            self.bn2 = norm(c_out)
            self.down = None
            if stride != 1 or c_in != c_out:
                self.down = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=not with_bn),
                                          norm(c_out))

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return torch.relu(y + (x if self.down is None else self.down(x)))

    model = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=not with_bn), norm(16), nn.ReLU(),
                          Block(16, 16, 1), Block(16, 32, 2), Block(32, 64, 2),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    if with_bn:
        gen = torch.Generator().manual_seed(0)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model.eval()


def without_identity(gm):
    """The traced model minus its nn.Identity calls: the model as written without BN."""
    from torch import nn

    for node in list(gm.graph.nodes):
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), nn.Identity):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    gm.recompile()
    return gm


def bench_torch(batch: int, repeats: int) -> dict:
    import torch

    from normlab.torch.fold import fold_bn

    torch.set_num_threads(1)
    torch.manual_seed(0)
    bn = torch_resnet(True)
    folded, report = fold_bn(bn)
    no_bn = without_identity(torch.fx.symbolic_trace(torch_resnet(False)))
    x = torch.randn(batch, 3, 32, 32)
    with torch.no_grad():
        err = (folded(x) - bn(x)).abs().max().item()
        times = interleaved({"bn": lambda: bn(x), "folded": lambda: folded(x),
                             "no_bn": lambda: no_bn(x)}, repeats, 3)
    return {"engine": "torch (eager CPU, 1 thread)", "model": "ResNet-style, 7 convs + 8 BN",
            "input": [batch, 3, 32, 32], "folded": len(report.folded),
            "not_folded": len(report.skipped), "max_abs_err": err, **times}


# -- NumPy engine: VGG-style -------------------------------------------------------------------
def numpy_cnn(with_bn: bool, rng):
    from normlab import nn

    layers, c_in = [], 3
    for c_out, pool in ((16, False), (32, True), (32, False), (64, True)):
        layers.append(nn.Conv2d(c_in, c_out, 3, padding=1, bias=not with_bn, rng=rng))
        if with_bn:
            bn = nn.BatchNorm2d(c_out)
            bn.running_mean[...] = rng.normal(size=c_out) * 0.1
            bn.running_var[...] = rng.uniform(0.5, 1.5, c_out)
            layers.append(bn)
        layers.append(nn.ReLU())
        if pool:
            layers.append(nn.MaxPool2d(2))
        c_in = c_out
    layers += [nn.Flatten(), nn.Linear(64 * 8 * 8, 10, rng=rng)]
    return nn.Sequential(*layers).eval()


def bench_numpy(batch: int, repeats: int) -> dict:
    from normlab.fold import fold_bn

    rng = np.random.default_rng(0)
    bn = numpy_cnn(True, rng)
    folded, report = fold_bn(bn)
    no_bn = numpy_cnn(False, rng)
    x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    err = float(np.abs(folded(x) - bn(x)).max())
    times = interleaved({"bn": lambda: bn(x), "folded": lambda: folded(x),
                         "no_bn": lambda: no_bn(x)}, repeats, 1)
    return {"engine": "normlab NumPy engine", "model": "VGG-style, 4 convs + 4 BN",
            "input": [batch, 3, 32, 32], "folded": len(report.folded),
            "not_folded": len(report.skipped), "max_abs_err": err, **times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    repeats = 7 if args.quick else 31
    rows = []
    try:
        rows.append(bench_torch(args.batch, repeats))
    except ImportError:
        print("torch not installed: skipping the torch model")
    rows.append(bench_numpy(args.batch, repeats))
    print(f"{'engine':30} {'bn ms':>8} {'folded':>8} {'no_bn':>8} {'BN share':>9} "
          f"{'speedup':>8} {'folded/no_bn':>12} {'max err':>9}")
    for r in rows:
        r["bn_share"] = (r["bn"] - r["no_bn"]) / r["bn"]
        r["speedup"] = r["bn"] / r["folded"]
        r["folded_over_no_bn"] = r["folded"] / r["no_bn"]
        print(f"{r['engine']:30} {r['bn'] * 1e3:8.2f} {r['folded'] * 1e3:8.2f} "
              f"{r['no_bn'] * 1e3:8.2f} {r['bn_share']:9.1%} {r['speedup']:8.2f}x "
              f"{r['folded_over_no_bn']:12.3f} {r['max_abs_err']:9.2g}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
