"""``normlab reproduce`` run as a user runs it (subprocess), at CI size: results schema over
seeds, worker processes, resume after SIGKILL, corrupted checkpoints, config changes, keeping
earlier experiments, the --out lock, escaped user text; and the experiment API with a fake
experiment in-process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from tests.commands import ENV, NORMLAB, QUICK, normlab, run_metrics


def test_results_schema_and_files(digits_run):
    res = json.loads((digits_run / "results.json").read_text())
    assert set(res) >= {"normlab", "config", "data", "environment", "experiments", "timing"}
    assert res["config"] == {"experiments": ["paper-fig1", "init-scale"], "quick": True,
                             "size": "quick",
                             "data": "digits", "engine": "numpy", "seed": 1000,
                             "seeds": [1000, 1001],
                             "jobs": 2, "steps_scale": 0.02}
    assert res["environment"]["numpy"] == np.__version__
    fig1 = res["experiments"]["paper-fig1"]
    for key in ("title", "source", "claim", "setup", "runs", "measured", "verdict", "reason",
                "thresholds", "figures", "csv", "seeds", "intervals", "criteria", "published"):
        assert key in fig1, key
    assert fig1["verdict"] in ("holds", "does not hold", "inconclusive")
    assert set(fig1["runs"]) == {"plain", "bn"} and fig1["seeds"] == [1000, 1001]
    assert set(fig1["runs"]["bn"]["metrics"]) == {"1000", "1001"}
    for m in fig1["runs"]["bn"]["metrics"].values():
        # quick (0.1) x CI (0.02) of 50,000 steps = 100 steps, evaluated at 0 and every 2
        assert m["step"][-1] == 100 and len(m["val_acc"]) == 51 == len(m["p50"])
        assert m["step"][0] == 0 and m["train_loss"][0] is None
        assert all(0 <= a <= 1 for a in m["val_acc"]) and 0 <= m["test_acc"] <= 1
        assert all(lo <= mid <= hi for lo, mid, hi in zip(m["p15"], m["p50"], m["p85"],
                                                          strict=True))
    seed0, seed1 = (fig1["runs"]["bn"]["metrics"][s]["val_acc"] for s in ("1000", "1001"))
    assert seed0 != seed1     # seeds draw other weights and batches
    for c in fig1["criteria"]:
        iv = fig1["intervals"][c["statistic"]]
        assert len(iv["per_seed"]) == 2 and iv == c["interval"]
        hi = iv["ci95"][1]        # null: an unbounded (censored) upper end
        assert iv["ci95"][0] <= iv["mean"] <= (float("inf") if hi is None else hi)
        assert hi is not None or iv["censored"] != "0 of 2"
    assert len(res["experiments"]["init-scale"]["runs"]) == 32
    for name in ("paper-fig1", "init-scale"):
        rows = (digits_run / name / "metrics.csv").read_text().splitlines()
        assert len(rows) > 1 and rows[0].startswith("seed,")
        for fig in res["experiments"][name]["figures"]:
            assert (digits_run / fig).read_bytes()[:4] == b"\x89PNG"
            assert b"<svg" in (digits_run / fig).with_suffix(".svg").read_bytes()[:500]


def test_verdict_is_computed_from_the_numbers(digits_run):
    """Changing the measured numbers changes the verdict (nothing is hard-coded)."""
    from tests.pipeline import verdict

    metrics = {k: v["1000"] for k, v in run_metrics(digits_run)["paper-fig1"].items()}
    steps = metrics["bn"]["step"]
    fast = [min(0.9, 0.3 + s / steps[-1]) if s > 10 else 0.9 for s in steps]
    slow = [0.1 + 0.8 * s / steps[-1] for s in steps]
    good = {"bn": {**metrics["bn"], "val_acc": fast, "test_acc": 0.9,
                   "drift_per_unit": [0.1] * 100},
            "plain": {**metrics["plain"], "val_acc": slow, "test_acc": 0.85,
                      "drift_per_unit": [1.0] * 100}}
    assert verdict("paper-fig1", good) == "holds"
    bad = {"bn": good["plain"], "plain": good["bn"]}
    assert verdict("paper-fig1", bad) == "does not hold"


def test_workers_give_the_results_of_one_process(digits_run, tmp_path):
    out = tmp_path / "one"
    proc = normlab("reproduce", "paper-fig1", "init-scale", *QUICK, "--jobs", "1", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert run_metrics(out) == run_metrics(digits_run)


def test_rerun_skips_finished_runs_keeps_other_experiments_and_report_rebuild(digits_run):
    done = digits_run / "checkpoints" / "init-scale" / "seed1001" / "std00-bn.done"
    before = done.stat().st_mtime_ns
    results_before = run_metrics(digits_run)
    cost_before = {k: json.loads((digits_run / "results.json").read_text())[k]["init-scale"]
                   for k in ("timing", "cpu_time")}
    proc = normlab("reproduce", "init-scale", *QUICK, "--out", digits_run)
    assert proc.returncode == 0, proc.stderr
    assert done.stat().st_mtime_ns == before
    # read back, not re-run: each run still reports what it cost when it ran (not ~0 s)
    res = json.loads((digits_run / "results.json").read_text())
    assert {k: res[k]["init-scale"] for k in cost_before} == cost_before
    assert cost_before["timing"] > 0
    assert "keeping paper-fig1" in proc.stderr
    # the experiment not re-run is kept, with its verdict: nothing is lost
    assert run_metrics(digits_run) == results_before
    res = json.loads((digits_run / "results.json").read_text())
    assert list(res["experiments"]) == ["paper-fig1", "init-scale"]
    assert res["experiments"]["paper-fig1"]["verdict"]
    (digits_run / "report.html").unlink()
    proc = normlab("report", digits_run)
    assert proc.returncode == 0, proc.stderr
    assert "paper-fig1" in (digits_run / "report.html").read_text()


def test_other_settings_say_so_before_replacing(digits_run, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(digits_run, out)
    proc = normlab("reproduce", "init-scale", "--quick", "--data", "digits", "--seeds", "1",
                   "--out", out)
    assert proc.returncode == 0, proc.stderr
    head = proc.stderr[:proc.stderr.find("init-scale runs")]
    assert "paper-fig1" in head and "other settings" in head and "seeds" in head
    assert list(json.loads((out / "results.json").read_text())["experiments"]) == ["init-scale"]


SIGKILL = signal.SIGKILL


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc)."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _kill_and_resume(tmp_path, ref: Path, name: str, jobs: int):
    args = ["reproduce", "paper-fig1", "--quick", "--data", "digits", "--steps-scale", "0.2",
            "--seeds", "2", "--jobs", str(jobs)]
    out = tmp_path / name
    proc = subprocess.Popen([*NORMLAB, *args, "--out", str(out)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    folder = out / "checkpoints" / "paper-fig1"
    deadline = time.monotonic() + 120
    while (not list(folder.glob("seed*/*.partial")) or not list(folder.glob("seed*/*.done"))) \
            and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    workers = _children(proc.pid)
    assert jobs == 1 or len(workers) >= jobs
    if jobs == 1:
        os.killpg(proc.pid, signal.SIGKILL)   # the CLI and anything it started
    else:
        os.kill(proc.pid, SIGKILL)            # the CLI alone: its workers must follow it
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{p}").exists() for p in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in workers if Path(f"/proc/{p}").exists()], "orphaned workers"
    done = sorted(folder.glob("seed*/*.done"))
    assert done and not (out / "results.json").exists()
    stamps = {p: p.stat().st_mtime_ns for p in done}
    resumed = normlab(*args, "--out", out)
    assert resumed.returncode == 0, resumed.stderr
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())   # finished units kept
    assert run_metrics(out) == run_metrics(ref)
    assert json.loads((out / "results.json").read_text())["experiments"]["paper-fig1"][
        "measured"] == json.loads((ref / "results.json").read_text())["experiments"][
        "paper-fig1"]["measured"]


def test_resume_after_sigkill_equals_uninterrupted(tmp_path):
    """Kill -9 mid-run (a unit done and another checkpointed), re-run: with one process and
    with two workers."""
    ref = tmp_path / "ref"
    assert normlab("reproduce", "paper-fig1", "--quick", "--data", "digits", "--steps-scale",
                   "0.2", "--seeds", "2", "--out", ref).returncode == 0
    _kill_and_resume(tmp_path, ref, "one", 1)
    _kill_and_resume(tmp_path, ref, "two", 2)


def test_corrupt_checkpoint_is_redone_and_seeds_live_side_by_side(digits_run, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(digits_run, out)
    done = out / "checkpoints" / "paper-fig1" / "seed1000" / "bn.done"
    blob = bytearray(done.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    done.write_bytes(bytes(blob))
    proc = normlab("reproduce", "paper-fig1", *QUICK, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "checksum" in proc.stderr and "redoing run paper-fig1/seed1000/bn" in proc.stderr
    first = run_metrics(digits_run)["paper-fig1"]
    assert run_metrics(out)["paper-fig1"] == first
    # seeds 1001 and 1002: 1001 is the finished one of the first run, 1002 is new
    stamp = (out / "checkpoints" / "paper-fig1" / "seed1001" / "bn.done").stat().st_mtime_ns
    proc = normlab("reproduce", "paper-fig1", *QUICK, "--seed", "1001", "--out", out)
    assert proc.returncode == 0, proc.stderr
    second = run_metrics(out)["paper-fig1"]
    assert (out / "checkpoints" / "paper-fig1" / "seed1001" / "bn.done").stat().st_mtime_ns == stamp
    assert second["bn"]["1001"] == first["bn"]["1001"] and \
        second["bn"]["1002"] != first["bn"]["1001"]
    assert (out / "checkpoints" / "paper-fig1" / "seed1000" / "bn.done").is_file()


def test_a_second_run_into_the_same_out_is_refused(tmp_path):
    import fcntl

    tmp_path.mkdir(exist_ok=True)
    with open(tmp_path / ".normlab.lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        f.write("pid 12345")
        f.flush()
        proc = normlab("reproduce", "init-scale", *QUICK, "--out", tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "in use" in proc.stderr
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize("args", [["[/x]"], ["--engine", "[/x]"], ["--data", "mnist:/no[v2]"],
                                  ["--seeds", "0"], ["--jobs", "0"], ["--seed", "-1"],
                                  ["--out", "/proc/[/x]"]])
def test_bad_arguments_are_one_escaped_line(args, tmp_path):
    proc = normlab("reproduce", *(["--out", tmp_path] if "--out" not in args else []), *args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    line = " ".join(proc.stderr.split())
    assert line.startswith("error:")
    for a in args:
        if "[" in a:   # user text printed as itself, not as markup
            assert a.split(":")[-1] in line, line


def test_report_escapes_results_text_and_refuses_a_broken_file(digits_run, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(digits_run, out)
    res = json.loads((out / "results.json").read_text())
    # the data's name is printed by the summary's "no reference" note (the claim is not)
    res["data"]["name"] = "[/bold] closes nothing"
    (out / "results.json").write_text(json.dumps(res))
    proc = normlab("report", out)
    assert proc.returncode == 0, proc.stderr
    assert "[/bold] closes nothing" in " ".join(proc.stdout.split())
    for broken in ("{", "[]", json.dumps({"experiments": {"paper-fig1": {"runs": 3}}})):
        (out / "results.json").write_text(broken)
        proc = normlab("report", out)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


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
                   "torch", "--seeds", "1", "--out", tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    t, n = run_metrics(tmp_path)["paper-fig1"], run_metrics(digits_run)["paper-fig1"]
    for key in ("plain", "bn"):
        # same data, seeds and initial weights; float32 rounding differences only
        t0, n0 = t[key]["1000"], n[key]["1000"]
        assert np.allclose(t0["train_loss"][1:], n0["train_loss"][1:], rtol=1e-3, atol=1e-4)
        assert np.abs(np.subtract(t0["val_acc"], n0["val_acc"])).max() <= 0.01


def test_new_experiment_plugs_in(monkeypatch, tmp_path):
    """The API: an experiment is one class + a registry entry; runner and report need nothing."""
    from normlab import data
    from normlab.experiments import Experiment, Run, registry
    from normlab.reproduce import Options, finalize, run_all
    from normlab.runner.evidence import Criterion

    class Fake(Experiment):
        name, title, source, claim = "fake", "Fake", "nowhere", "x is 2"
        criteria = (Criterion("x is about 2", "x", 1.5),)

        def setup(self, data, scale, size="full"):
            return "nothing"

        def runs(self, data, scale, size="full"):
            planned.append(size)
            return [Run("a", {"k": 1}), Run("b", {"k": 2})]

        def run(self, ctx, config):
            return {"x": config["k"] + 0.01 * float(ctx.rng("x").random())}

        def statistics(self, runs, metrics):
            return {"x": metrics["b"]["x"]}

        def figures(self, runs, by_seed, summary):
            import matplotlib.pyplot as plt
            fig, ax = plt.subplots()
            ax.plot([1, 2])
            return {"f": fig}

    monkeypatch.setitem(registry.EXPERIMENTS, "fake", Fake())
    opts = Options(names=["fake"], data_spec="digits", engine="numpy", out=tmp_path, seed=0,
                   seeds=3)
    planned = []
    results = run_all(opts, data.load("digits"))
    assert planned == ["full"]   # the runs are computed once, for all seeds and the results
    report = finalize(tmp_path, results)
    assert results["experiments"]["fake"]["verdict"] == "holds"
    assert len(results["experiments"]["fake"]["intervals"]["x"]["per_seed"]) == 3
    assert "x is 2" in report.read_text() and (tmp_path / "fake" / "f.svg").is_file()
