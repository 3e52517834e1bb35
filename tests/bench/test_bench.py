"""``normlab bench`` as a user runs it (tiny sizes: a smoke test, never a timing test)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from normlab.bench import FULL_CASES, TINY_CASES, write_json
from normlab.bench.textbook import TextbookBatchNorm


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
    if flag == "--tiny":
        assert_model_rows(result["models"])


def assert_model_rows(models: dict) -> None:
    """One row per model of bench_models.MODELS with positive rates and shares summing to 1
    (or the reason it was skipped: torch missing)."""
    if "skipped" in models:
        assert models["skipped"] == "torch is not installed"
        return
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_models.py"
    spec = importlib.util.spec_from_file_location("_bench_models_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert models["threads"] == 1
    assert [r["model"] for r in models["rows"]] == list(module.MODELS)
    for row in models["rows"]:
        assert row["numpy_steps_per_s"] > 0 and row["torch_steps_per_s"] > 0
        assert np.isclose(row["ratio"], row["numpy_steps_per_s"] / row["torch_steps_per_s"])
        assert np.isclose(sum(row["shares"].values()), 1.0)
        assert min(row["shares"].values()) >= 0


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


def fake_result() -> dict:
    """What ``normlab.bench.run`` returns, for one tiny row: the CLI around it is under test."""
    row = {"case": "BN1d", "shape": [4, 3], "family": "batch", "layout": "contiguous",
           "dtype": "float32", "mode": "train", "impl": "normlab-numpy", "median_s": 1e-5,
           "times_s": [1e-5], "gbps": 1.0, "copy_fraction": 0.1, "speedup_vs_torch": None,
           "note": ""}
    return {"machine": {"torch_threads": None}, "repeats": 1, "copy_gbps": 10.0,
            "byte_model": {"train": "5 x", "eval": "2 x", "copy": "2 x"}, "rows": [row],
            "mlp": {"skipped": "not timed here"}, "models": {"skipped": "not timed here"}}


@pytest.fixture
def fake_run(monkeypatch):
    """bench.run replaced by :func:`fake_result`; ``calls`` counts how often it ran."""
    import normlab.bench.command

    calls = []
    monkeypatch.setattr(normlab.bench.command, "run",
                        lambda **kw: calls.append(kw) or fake_result())
    return calls


def invoke(*args):
    from typer.testing import CliRunner

    from normlab.cli import app
    return CliRunner().invoke(app, ["bench", *map(str, args)])


@pytest.mark.parametrize("case", ["directory", "below a file", "pool variable"])
def test_bad_settings_are_refused_before_any_timing(tmp_path, monkeypatch, fake_run, case):
    """--json used to be checked after the whole benchmark (minutes), then fail with a
    traceback, the timings lost."""
    target = tmp_path / "bench.json"
    if case == "directory":
        target.mkdir()
    elif case == "below a file":
        (tmp_path / "file").write_text("x")
        target = tmp_path / "file" / "bench.json"
    else:
        monkeypatch.setenv("NORMLAB_OUTPUT_POOL", "lots")
    result = invoke("--tiny", "--json", target)
    assert result.exit_code == 2 and fake_run == []
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1


def test_json_path_with_markup_is_written_and_printed_verbatim(tmp_path, fake_run):
    """rich read '[/x]' in the path as a closing tag and crashed after the run."""
    (tmp_path / "[").mkdir()
    target = tmp_path / "[" / "x].json"
    result = invoke("--tiny", "--json", target)
    assert result.exit_code == 0, result.output
    assert f"wrote {target}" in result.output.replace("\n", "")
    assert json.loads(target.read_text())["rows"][0]["case"] == "BN1d"


def test_json_missing_folders_are_created_at_the_end(tmp_path, fake_run):
    target = tmp_path / "new" / "deeper" / "bench.json"
    assert invoke("--tiny", "--json", target).exit_code == 0
    assert json.loads(target.read_text())["repeats"] == 1
