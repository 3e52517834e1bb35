"""Bad command-line input: a one-line error and exit code 2, never a traceback."""

from __future__ import annotations

import pytest

from tests.commands import ENV, normlab


@pytest.mark.parametrize("args, needle", [
    (["reproduce", "no-such-experiment"], "unknown experiment 'no-such-experiment'"),
    (["reproduce", "--data", "cifar"], "--data: expected one of"),
    (["reproduce", "--data", "mnist:/no/such/dir"], "does not exist"),
    (["reproduce", "--data", "fashion-mnist", "--data-dir", "/no/such"], "does not exist"),
    (["reproduce", "--engine", "jax"], "--engine: expected numpy or torch"),
    (["reproduce", "--seed", "-1"], "--seed"),
    (["reproduce", "--steps-scale", "5"], "--steps-scale"),
    (["reproduce", "--size", "huge"], "--size: expected one of quick, full, paper, got 'huge'"),
    (["reproduce", "--quick", "--size", "paper"],
     "--size: expected quick or none with --quick (an alias of size quick), got 'paper'"),
    (["reproduce", "--size", "full", "--quick"], "got 'full'"),
    (["reproduce", "--out", "/proc/normlab-cannot-write"], "--out: cannot write"),
    (["report", "/no/such/dir"], "no results.json"),
])
def test_bad_input_one_line_exit_2(args, needle):
    proc = normlab(*args)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_unwritable_out_below_a_file(tmp_path):
    """A folder cannot be created below a regular file, whoever runs the test (root included:
    a read-only folder would not stop root)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = normlab("reproduce", "--out", blocker / "x")
    assert proc.returncode == 2 and "--out: cannot write" in proc.stderr
    assert blocker.read_text() == "not a folder"


def test_bad_ci_scale_env():
    proc = normlab("reproduce", env={**ENV, "NORMLAB_CI_SCALE": "fast"})
    assert proc.returncode == 2 and "NORMLAB_CI_SCALE" in proc.stderr


def test_list_shows_experiments():
    proc = normlab("list")
    assert proc.returncode == 0
    assert "paper-fig1" in proc.stdout and "init-scale" in proc.stdout
