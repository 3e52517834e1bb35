"""``normlab reproduce`` run as a user runs it (subprocess), at CI size: results schema, resume
after SIGKILL, corrupted checkpoints, config changes; and the experiment API with a fake
experiment in-process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

NORMLAB = [sys.executable, "-m", "normlab.cli"]
ENV = {**os.environ, "NORMLAB_CI_SCALE": "0.02"}


def normlab(*args, env=ENV, timeout=600):
    return subprocess.run([*NORMLAB, *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def run_metrics(out: Path) -> dict:
    res = json.loads((out / "results.json").read_text())
    return {name: {k: r["metrics"] for k, r in e["runs"].items()}
            for name, e in res["experiments"].items()}


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> Path:
    """One uninterrupted quick reproduction of every experiment on `digits` at CI size."""
    out = tmp_path_factory.mktemp("digits") / "out"
    proc = normlab("reproduce", "paper-fig1", "init-scale", "--quick", "--data", "digits", "--out",
                   out)
    assert proc.returncode == 0, proc.stderr
    assert f"Report: {(out / 'report.html').resolve()}" in proc.stdout.replace("\n", "")
    return out


def test_results_schema_and_files(digits_run):
    res = json.loads((digits_run / "results.json").read_text())
    assert set(res) >= {"normlab", "config", "data", "environment", "experiments", "timing"}
    assert res["config"] == {"experiments": ["paper-fig1", "init-scale"], "quick": True,
                             "data": "digits", "engine": "numpy", "seed": 0, "steps_scale": 0.02}
    assert res["environment"]["numpy"] == np.__version__
    fig1 = res["experiments"]["paper-fig1"]
    for key in ("title", "source", "claim", "setup", "runs", "measured", "verdict", "reason",
                "thresholds", "figures", "csv"):
        assert key in fig1, key
    assert fig1["verdict"] in ("holds", "does not hold", "inconclusive")
    assert set(fig1["runs"]) == {"plain", "bn"}
    m = fig1["runs"]["bn"]["metrics"]
    # quick (0.1) x CI (0.02) of 50,000 steps = 100 steps, evaluated every 2
    assert m["step"][-1] == 100 and len(m["test_acc"]) == 50 == len(m["p50"])
    assert all(0 <= a <= 1 for a in m["test_acc"])
    assert all(lo <= mid <= hi for lo, mid, hi in zip(m["p15"], m["p50"], m["p85"], strict=True))
    assert len(res["experiments"]["init-scale"]["runs"]) == 32
    for name in ("paper-fig1", "init-scale"):
        rows = (digits_run / name / "metrics.csv").read_text().splitlines()
        assert len(rows) > 1 and "," in rows[0]
        for fig in res["experiments"][name]["figures"]:
            assert (digits_run / fig).read_bytes()[:4] == b"\x89PNG"
            assert b"<svg" in (digits_run / fig).with_suffix(".svg").read_bytes()[:500]


def test_verdict_is_computed_from_the_numbers(digits_run):
    """Changing the measured numbers changes the verdict (nothing is hard-coded)."""
    from normlab.experiments import get

    exp = get("paper-fig1")
    metrics = run_metrics(digits_run)["paper-fig1"]
    steps = metrics["bn"]["step"]
    fast = [min(0.9, 0.3 + s / steps[-1]) if s > 10 else 0.9 for s in steps]
    slow = [0.1 + 0.8 * s / steps[-1] for s in steps]
    good = {"bn": {**metrics["bn"], "test_acc": fast, "drift_per_unit": [0.1] * 100},
            "plain": {**metrics["plain"], "test_acc": slow, "drift_per_unit": [1.0] * 100}}
    assert exp.summarize([], good).verdict == "holds"
    bad = {"bn": good["plain"], "plain": good["bn"]}
    assert exp.summarize([], bad).verdict == "does not hold"


def test_rerun_skips_finished_runs_and_report_rebuild(digits_run, tmp_path):
    before = (digits_run / "checkpoints" / "init-scale" / "std00-bn.done").stat().st_mtime_ns
    proc = normlab("reproduce", "init-scale", "--quick", "--data", "digits", "--out", digits_run)
    assert proc.returncode == 0, proc.stderr
    assert (digits_run / "checkpoints" / "init-scale" / "std00-bn.done").stat().st_mtime_ns \
        == before
    # results.json now holds init-scale only; `report` rebuilds from it
    (digits_run / "report.html").unlink()
    proc = normlab("report", digits_run)
    assert proc.returncode == 0, proc.stderr
    assert (digits_run / "report.html").is_file()
    # restore the full results for the other tests sharing this folder
    assert normlab("reproduce", "paper-fig1", "init-scale", "--quick", "--data", "digits",
                   "--out", digits_run
                   ).returncode == 0


def test_resume_after_sigkill_equals_uninterrupted(tmp_path):
    """Kill -9 mid-run (after the first run is done and the second checkpointed), re-run."""
    args = ["reproduce", "paper-fig1", "--quick", "--data", "digits", "--steps-scale", "0.2"]
    ref = tmp_path / "ref"
    assert normlab(*args, "--out", ref).returncode == 0
    out = tmp_path / "killed"
    proc = subprocess.Popen([*NORMLAB, *args, "--out", str(out)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = out / "checkpoints" / "paper-fig1" / "bn.partial"
    deadline = time.monotonic() + 60
    while not partial.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert (out / "checkpoints" / "paper-fig1" / "plain.done").is_file()
    assert not (out / "results.json").exists()
    done_before = (out / "checkpoints" / "paper-fig1" / "plain.done").stat().st_mtime_ns
    resumed = normlab(*args, "--out", out)
    assert resumed.returncode == 0, resumed.stderr
    assert (out / "checkpoints" / "paper-fig1" / "plain.done").stat().st_mtime_ns == done_before
    assert run_metrics(out) == run_metrics(ref)
    assert json.loads((out / "results.json").read_text())["experiments"]["paper-fig1"][
        "measured"] == json.loads((ref / "results.json").read_text())["experiments"][
        "paper-fig1"]["measured"]


def test_corrupt_checkpoint_is_redone_and_other_config_not_reused(digits_run, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(digits_run, out)
    done = out / "checkpoints" / "paper-fig1" / "bn.done"
    blob = bytearray(done.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    done.write_bytes(bytes(blob))
    proc = normlab("reproduce", "paper-fig1", "--quick", "--data", "digits", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "checksum" in proc.stderr and "redoing run paper-fig1/bn" in proc.stderr
    assert run_metrics(out)["paper-fig1"] == run_metrics(digits_run)["paper-fig1"]
    # another seed: the checkpoints of seed 0 must not be reused
    proc = normlab("reproduce", "paper-fig1", "--quick", "--data", "digits", "--seed", "1",
                   "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert run_metrics(out)["paper-fig1"] != run_metrics(digits_run)["paper-fig1"]


def test_mnist5k_pipeline(tmp_path):
    env = {**ENV, "NORMLAB_CI_SCALE": "0.01"}
    proc = normlab("reproduce", "paper-fig1", "--quick", "--out", tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["data"]["name"] == "mnist5k"
    assert res["experiments"]["paper-fig1"]["runs"]["bn"]["config"]["sizes"][0] == 784


def test_torch_engine_matches_numpy_engine(torch, tmp_path, digits_run):
    env = {**ENV, "NORMLAB_CI_SCALE": "0.02"}
    proc = normlab("reproduce", "paper-fig1", "--quick", "--data", "digits", "--engine",
                   "torch", "--out", tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    t, n = run_metrics(tmp_path)["paper-fig1"], run_metrics(digits_run)["paper-fig1"]
    for key in ("plain", "bn"):
        # same data, seeds and initial weights; float32 rounding differences only
        assert np.allclose(t[key]["train_loss"], n[key]["train_loss"], rtol=1e-3, atol=1e-4)
        assert np.abs(np.subtract(t[key]["test_acc"], n[key]["test_acc"])).max() <= 0.01


def test_new_experiment_plugs_in(monkeypatch, tmp_path):
    """The API: an experiment is one class + a registry entry; runner and report need nothing."""
    from normlab import data
    from normlab.experiments import Experiment, Run, Summary, registry
    from normlab.reproduce import Options, finalize, run_all

    class Fake(Experiment):
        name, title, source, claim = "fake", "Fake", "nowhere", "x is 2"

        def setup(self, data, scale):
            return "nothing"

        def runs(self, data, scale):
            return [Run("a", {"k": 1}), Run("b", {"k": 2})]

        def run(self, ctx, config):
            return {"x": float(ctx.rng("x").integers(10)) * 0 + config["k"]}

        def summarize(self, runs, metrics):
            x = metrics["b"]["x"]
            return Summary({"x": x}, "holds" if x == 2 else "does not hold", f"x={x}", "x==2",
                           [{"x": x}])

        def figures(self, runs, metrics, summary):
            import matplotlib.pyplot as plt
            fig, ax = plt.subplots()
            ax.plot([1, 2])
            return {"f": fig}

    monkeypatch.setitem(registry.EXPERIMENTS, "fake", Fake())
    opts = Options(["fake"], False, "digits", "numpy", tmp_path, 0)
    results = run_all(opts, data.load("digits"))
    report = finalize(tmp_path, results)
    assert results["experiments"]["fake"]["verdict"] == "holds"
    assert "x is 2" in report.read_text() and (tmp_path / "fake" / "f.svg").is_file()
