"""Long runs keep memory flat: no growth (tracemalloc) over the last 90% of the iterations.

The full size (1,000,000 eval forwards, 100,000 training steps) is marked slow; CI runs a
scaled version (20,000 / 5,000 on a tiny layer) of the same check.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from normlab import nn

# allowance for tracemalloc's own bookkeeping and interpreter caches (a leak of even one
# 8-byte scalar per iteration would exceed it after 4,500 iterations)
SLACK = 32 * 1024


def _growth(step, iterations: int) -> int:
    """Traced bytes after all iterations minus after the first 10% (the warm-up)."""
    warm = max(iterations // 10, 1)
    for _ in range(warm):
        step()
    tracemalloc.start()
    try:
        for _ in range(2):
            step()
        start, _ = tracemalloc.get_traced_memory()
        for _ in range(iterations - warm - 2):
            step()
        end, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return end - start


def _eval_step(size):
    m = nn.BatchNorm1d(size[1])
    m(np.random.default_rng(0).normal(size=size).astype(np.float32))
    m.eval()
    x = np.random.default_rng(1).normal(size=size).astype(np.float32)
    return lambda: m(x)


def _train_step(size):
    m = nn.BatchNorm1d(size[1])
    x = np.random.default_rng(1).normal(size=size).astype(np.float32)
    dy = np.ones_like(x)

    def step():
        m(x)
        m.backward(dy)
        m.weight.grad = m.bias.grad = None
    return step


@pytest.mark.parametrize("kind,iterations", [("eval", 20_000), ("train", 5_000)])
def test_memory_is_flat_scaled(kind, iterations):
    step = (_eval_step if kind == "eval" else _train_step)((4, 3))
    assert _growth(step, iterations) < SLACK


@pytest.mark.slow
@pytest.mark.parametrize("kind,iterations", [("eval", 1_000_000), ("train", 100_000)])
def test_memory_is_flat_full_size(kind, iterations):
    step = (_eval_step if kind == "eval" else _train_step)((60, 100))
    assert _growth(step, iterations) < SLACK
