"""Paper-MLP training speed: normlab's NumPy engine vs PyTorch eager, interleaved in one process.

The network is Ioffe & Szegedy 2015 sec. 4.1 (784-100-100-100-10, BN before each sigmoid),
batch 60, SGD with momentum 0.9; one step = forward, loss, backward, update, zero_grad.

    python benchmarks/bench_mlp.py [--steps 200] [--rounds 7]

Engines: "numpy" (normlab, kernels as configured), "numpy-reference" (normlab with
NORMLAB_KERNELS=numpy), "torch" (default threads), "torch-1thread". Machine noise is ~2x between
runs, so the engines are timed in alternating rounds and the medians compared.
:func:`mlp_steps_per_second` is what ``normlab bench`` reuses.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import numpy as np

BATCH, WIDTHS, CLASSES = 60, (784, 100, 100, 100), 10
ENGINES = ("numpy", "numpy-reference", "torch", "torch-1thread")


def _batches(n: int = 8, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(rng.random((BATCH, WIDTHS[0]), dtype=np.float32), rng.integers(0, CLASSES, BATCH))
            for _ in range(n)]


def _normlab_step(seed: int = 0) -> Callable[[np.ndarray, np.ndarray], float]:
    import normlab.nn as nn
    from normlab.optim import SGD

    rng = np.random.default_rng(seed)
    layers = []
    for fan_in, fan_out in zip(WIDTHS[:-1], WIDTHS[1:], strict=True):
        layers += [nn.Linear(fan_in, fan_out, rng=rng), nn.BatchNorm1d(fan_out), nn.Sigmoid()]
    model = nn.Sequential(*layers, nn.Linear(WIDTHS[-1], CLASSES, rng=rng))
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def step(x, y):
        loss = loss_fn(model(x), y)
        # like torch, skip the gradient w.r.t. the input images (nobody needs it)
        model.backward(loss_fn.backward(), input_grad=False)
        opt.step()
        opt.zero_grad()
        return loss

    return step


def _torch_step(seed: int = 0) -> Callable[[np.ndarray, np.ndarray], float]:
    import torch

    torch.manual_seed(seed)
    T, layers = torch.nn, []
    for fan_in, fan_out in zip(WIDTHS[:-1], WIDTHS[1:], strict=True):
        layers += [T.Linear(fan_in, fan_out), T.BatchNorm1d(fan_out), T.Sigmoid()]
    model = T.Sequential(*layers, T.Linear(WIDTHS[-1], CLASSES))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = T.CrossEntropyLoss()

    def step(x, y):
        loss = loss_fn(model(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss.item()  # a real training loop reads the loss; it also syncs

    return step


class _Settings:
    """Per-engine environment (kernel backend, torch threads), applied only while timing."""

    def __init__(self, engine: str):
        if engine not in ENGINES:
            raise ValueError(f"engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
        self.engine = engine

    def __enter__(self):
        self._kernels = os.environ.get("NORMLAB_KERNELS")
        if self.engine == "numpy-reference":
            os.environ["NORMLAB_KERNELS"] = "numpy"
        if self.engine == "torch-1thread":
            import torch
            self._threads = torch.get_num_threads()
            torch.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        if self.engine == "numpy-reference":
            if self._kernels is None:
                os.environ.pop("NORMLAB_KERNELS", None)
            else:
                os.environ["NORMLAB_KERNELS"] = self._kernels
        if self.engine == "torch-1thread":
            import torch
            torch.set_num_threads(self._threads)


def _make(engine: str) -> Callable[[np.ndarray, np.ndarray], float]:
    return _torch_step() if engine.startswith("torch") else _normlab_step()


def _time(engine: str, step, batches, steps: int) -> float:
    with _Settings(engine):
        for x, y in batches[:3]:  # warm-up: caches, numba compilation, allocator
            step(x, y)
        start = time.perf_counter()
        for i in range(steps):
            x, y = batches[i % len(batches)]
            step(x, y)
        return steps / (time.perf_counter() - start)


def mlp_steps_per_second(engine: str, steps: int) -> float:
    """Training steps per second of the paper MLP (batch 60) for one engine (one timing)."""
    _Settings(engine)  # validates the name
    return _time(engine, _make(engine), _batches(), steps)


def compare(engines: tuple[str, ...], steps: int, rounds: int) -> dict[str, list[float]]:
    """Alternate the engines round by round; steps/s of every round per engine."""
    batches = _batches()
    stepper = {e: _make(e) for e in engines}
    results: dict[str, list[float]] = {e: [] for e in engines}
    for _ in range(rounds):
        for e in engines:
            results[e].append(_time(e, stepper[e], batches, steps))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    args = parser.parse_args()
    results = compare(tuple(args.engines), args.steps, args.rounds)
    medians = {e: statistics.median(v) for e, v in results.items()}
    print(f"paper MLP 784-100-100-100-10, BN + sigmoid, batch {BATCH}, SGD momentum 0.9; "
          f"median of {args.rounds} interleaved rounds x {args.steps} steps")
    for e, m in medians.items():
        spread = f"[{min(results[e]):.0f} .. {max(results[e]):.0f}]"
        print(f"  {e:16s} {m:8.0f} steps/s  {spread}")
    for ref in ("torch", "torch-1thread"):
        for ours in ("numpy", "numpy-reference"):
            if ours in medians and ref in medians:
                print(f"  ratio {ours} / {ref}: {medians[ours] / medians[ref]:.2f}x")


if __name__ == "__main__":
    main()
