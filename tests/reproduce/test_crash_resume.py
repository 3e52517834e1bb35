"""Nothing lost on a crash: ``normlab reproduce`` SIGKILLed at 10 seeded-random moments.

After every kill, each file the run has written so far must be whole and parseable (every
file is written to a temporary name in the same folder and then ``os.replace``d), and the
final resumed run must give exactly the metrics of an uninterrupted run with the same seed.
(Corrupted checkpoints -- checksum -> warning and redo -- are tested in test_reproduce.py.)
"""

from __future__ import annotations

import csv
import json
import random
import signal
import subprocess
import time
from pathlib import Path

from normlab.runner.store import read_checkpoint
from tests.commands import ENV, NORMLAB, normlab, run_metrics

ARGS = ["reproduce", "paper-fig1", "--quick", "--data", "digits", "--seed", "3"]
KILLS = 10


def assert_files_intact(out: Path) -> None:
    for path in out.rglob("*"):
        if not path.is_file() or path.name.endswith(".tmp"):
            continue    # a temporary left by the kill is never read by normlab
        data = path.read_bytes()
        if path.suffix in (".done", ".partial"):
            read_checkpoint(path)           # raises CorruptCheckpoint if torn
        elif path.suffix == ".json":
            json.loads(data)
        elif path.suffix == ".csv":
            rows = list(csv.reader(data.decode().splitlines()))
            assert rows and all(len(r) == len(rows[0]) for r in rows), path
        elif path.suffix == ".png":
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[-12:-4] == b"\x00\x00\x00\x00IEND"
        elif path.suffix == ".svg":
            assert data.rstrip().endswith(b"</svg>"), path
        elif path.suffix == ".html":
            assert data.rstrip().endswith(b"</html>"), path


def test_sigkill_at_random_moments_then_resume_equals_uninterrupted(tmp_path):
    ref = tmp_path / "ref"
    t0 = time.monotonic()
    proc = normlab(*ARGS, "--out", ref)
    assert proc.returncode == 0, proc.stderr
    duration = time.monotonic() - t0
    rng = random.Random(20150211)
    out = tmp_path / "killed"
    killed = 0
    for _ in range(KILLS):
        p = subprocess.Popen([*NORMLAB, *ARGS, "--out", str(out)], env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # kill somewhere in the first 40% of a full run: each restart resumes from the last
        # checkpoint, so later kills land in later phases (training, figures, report)
        try:
            p.wait(timeout=rng.uniform(0.2, 0.4 * duration))
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            killed += p.wait() == -signal.SIGKILL
        assert_files_intact(out)
    assert killed >= KILLS // 2, "most runs must really have been killed mid-way"
    resumed = normlab(*ARGS, "--out", out)
    assert resumed.returncode == 0, resumed.stderr
    assert_files_intact(out)
    assert run_metrics(out) == run_metrics(ref)
    mine = json.loads((out / "results.json").read_text())["experiments"]["paper-fig1"]
    theirs = json.loads((ref / "results.json").read_text())["experiments"]["paper-fig1"]
    assert mine["measured"] == theirs["measured"] and mine["verdict"] == theirs["verdict"]


# -- a failed write (disk full) while writing fold's or bench's output ---------------------------
def disk_full(monkeypatch) -> None:
    """Every fsync fails with ENOSPC, as on a full disk: atomic writes flush then fsync."""
    import errno
    import os

    def fail(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fsync", fail)


def test_disk_full_during_fold_keeps_old_output_and_is_one_line(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from normlab.cli import app
    from normlab.fold.archive import build, save_model
    from tests.fold.test_fold_cli import SPEC

    src, out = tmp_path / "m.npz", tmp_path / "folded.npz"
    save_model(src, SPEC, build(SPEC))
    out.write_bytes(b"an earlier fold's output")
    disk_full(monkeypatch)
    result = CliRunner().invoke(app, ["fold", str(src), "-o", str(out), "--input-shape",
                                      "1,3,6,6"])
    assert result.exit_code == 2, result.output
    assert result.output == f"Error: --out: could not write {str(out)!r}: No space left on " \
                            f"device\n"
    assert out.read_bytes() == b"an earlier fold's output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folded.npz", "m.npz"]  # no temp


def test_disk_full_during_bench_json_is_one_line_after_the_table(tmp_path, monkeypatch):
    import normlab.bench.command
    from tests.bench.test_bench import fake_result, invoke

    monkeypatch.setattr(normlab.bench.command, "run", lambda **kw: fake_result())
    target = tmp_path / "bench.json"
    target.write_text('{"earlier": true}')
    disk_full(monkeypatch)
    result = invoke("--tiny", "--json", target)
    assert result.exit_code == 2
    table, error = result.output.split("Error: ")
    assert "BN1d" in table   # the timings were printed before the write failed
    assert error == f"--json: could not write {str(target)!r} (No space left on device); the " \
                     f"timings above were not saved\n"
    assert target.read_text() == '{"earlier": true}'
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]
