"""benchmarks/device_check.sh, the script for a lent GPU machine, run here as a dry run on the CPU
(DEVICE=cpu, digits, CI scale): it refuses without a GPU, stops at its time budget with a
message, and a second call resumes from the checkpoints and writes both halves' reports and the
archive for $OUT."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "device_check.sh"
# the cheapest experiment of each half: the script's plumbing is under test, not the claims
DRY = {"DEVICE": "cpu", "DATA": "digits", "NORMLAB_CI_SCALE": "0.002", "SEEDS": "1",
       "GPU_JOBS": "1", "CPU_JOBS": "1", "GPU_EXPERIMENTS": "learning-rate",
       "CPU_EXPERIMENTS": "rnn-norm", "PYTHON": sys.executable}


def run_script(tmp_path: Path, **env) -> subprocess.CompletedProcess:
    full = {**os.environ, "STATE": str(tmp_path / "state"), **env}
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=full,
                          timeout=600)


def test_refuses_without_a_usable_gpu(torch, tmp_path):
    proc = run_script(tmp_path, PYTHON=sys.executable, CUDA_VISIBLE_DEVICES="")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "sees no usable GPU" in proc.stderr and "nothing was run" in proc.stderr
    assert not (tmp_path / "state").exists()


def test_a_stopped_call_resumes_and_the_second_finishes(torch, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    first = run_script(tmp_path, **DRY, BUDGET_S="4", OUT=str(out))
    assert first.returncode == 1, first.stdout + first.stderr
    assert "stopped (exit 124) before finishing: run this script again" in first.stdout
    second = run_script(tmp_path, **DRY, OUT=str(out))
    assert second.returncode == 0, second.stdout + second.stderr
    state = tmp_path / "state"
    for half, experiment, engine in (("gpu", "learning-rate", "torch"),
                                     ("cpu", "rnn-norm", "numpy")):
        assert f"device_check: {half} complete" in second.stdout
        res = json.loads((state / half / "results.json").read_text())
        assert res["config"]["size"] == "paper" and res["config"]["engine"] == engine
        assert list(res["experiments"]) == [experiment]
        assert f"`{experiment}`" in (out / f"{half}-RESULTS-paper.md").read_text()
    assert (out / "state.tgz.0").stat().st_size > 0 and (out / "gpu.log").is_file()
    # a third call finds every run done and redoes none of them
    done = {p: p.stat().st_mtime_ns for p in state.rglob("*.done")}
    third = run_script(tmp_path, **DRY)
    assert third.returncode == 0, third.stdout + third.stderr
    assert done and {p: p.stat().st_mtime_ns for p in done} == done
