"""``normlab bench`` as a user runs it (tiny sizes: a smoke test, never a timing test)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from normlab.bench import FULL_CASES, TINY_CASES, write_json
from normlab.bench_textbook import TextbookBatchNorm


@pytest.mark.parametrize(("flag", "expected_cases"), [("--tiny", TINY_CASES),
                                                      ("--quick", FULL_CASES)])
def test_bench_runs_and_writes_valid_json(tmp_path, flag, expected_cases):
    """--quick is the issue's CI smoke run (full-size shapes, fewer repetitions: ~12 s alone);
    --tiny checks the same output on toy shapes."""
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "normlab.cli", "bench", flag, "--json",
                           str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["copy_gbps"] > 0
    cases = {(r["case"], tuple(r["shape"])) for r in result["rows"]}
    assert cases == {(c.name, c.shape) for c in expected_cases}
    for row in result["rows"]:
        assert row["median_s"] > 0 and row["mode"] in ("train", "eval", "loop")
        factor = 2 if row["mode"] == "eval" else 5
        nbytes = 4 * int(np.prod(row["shape"]))
        assert np.isclose(row["gbps"], factor * nbytes / row["median_s"] / 1e9)
    assert {"normlab-numpy", "textbook"} <= {r["impl"] for r in result["rows"]}
    assert {r["mode"] for r in result["rows"]} == {"train", "eval", "loop"}
    assert "byte model" in proc.stdout


def test_write_json_is_atomic(tmp_path):
    path = tmp_path / "r.json"
    write_json({"a": 1}, path)
    write_json({"a": 2}, path)
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_textbook_baseline_is_per_activation_batch_norm(torch):
    """The baseline computes what the book says: BatchNorm1d over the flattened activations."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 2, 3, 3))
    dy = rng.normal(size=x.shape)
    d = 18
    layer = TextbookBatchNorm(np.ones(d), np.zeros(d))
    y = layer.forward(x)
    dx = layer.backward(dy)
    ref = torch.nn.BatchNorm1d(d, eps=10e-7).double()
    tx = torch.from_numpy(x.reshape(6, -1)).requires_grad_(True)
    ty = ref(tx)
    ty.backward(torch.from_numpy(dy.reshape(6, -1)))
    np.testing.assert_allclose(y.reshape(6, -1), ty.detach().numpy(), atol=1e-10)
    np.testing.assert_allclose(dx.reshape(6, -1), tx.grad.numpy(), atol=1e-10)
