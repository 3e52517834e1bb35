"""The bad-input table, part 2 (issue 26): files and folders an attacker or a careless user
hands the CLI, workloads a small file declares, text from data that reaches a terminal or a
Markdown file, and what used to end in a traceback or be accepted silently.

Every row runs the real command (as root in CI, like the probe) on a copy of a real results
folder next to a ``victim`` folder, snapshots the whole test folder first (file bytes, link
targets, which entries are FIFOs and devices) and checks that the command

* exits with code 2 and one line on stderr naming the argument and the problem (or, where the
  row says so, succeeds: the documented behaviour), with no traceback,
* wrote nothing: the snapshot after equals the one before (and ``/dev/full`` is still a
  device), so nothing was lost inside OUT and nothing was written outside it.

The workloads ("bombs") run in a subprocess under ``RLIMIT_AS`` (``ulimit -v``): each must be
refused by the cost checks before allocating, in under a second and 200 MB.
"""

from __future__ import annotations

import gzip
import json
import os
import resource
import shutil
import signal
import stat
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.commands import ENV, NORMLAB, QUICK

VICTIM = b"precious: must never change\n"


def tree(folder: Path) -> dict:
    """Everything under ``folder`` (links not followed): bytes, link targets, entry kinds."""
    snap = {}
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in dirs + files:
            path = Path(root) / name
            mode = os.lstat(path).st_mode
            rel = path.relative_to(folder).as_posix()
            if stat.S_ISLNK(mode):
                snap[rel] = ("link", os.readlink(path))
            elif stat.S_ISREG(mode):
                snap[rel] = ("file", path.read_bytes())
            else:
                snap[rel] = ("dir" if stat.S_ISDIR(mode) else "special", stat.S_IFMT(mode))
    return snap


@dataclass(frozen=True)
class FsCase:
    id: str
    prepare: Callable[[Path, Path], list]   # (tmp, OUT: a copy of a results folder) -> argv
    parts: tuple[str, ...]                  # in the one stderr line
    rc: int = 2                             # 0: the documented behaviour is to go on safely


def link(name: str, target) -> Callable[[Path, Path], None]:
    def make(tmp: Path, out: Path) -> None:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        os.symlink(str(target).replace("TMP", str(tmp)), path)
    return make


def with_setup(setup, argv: list) -> Callable[[Path, Path], list]:
    def prepare(tmp: Path, out: Path) -> list:
        setup(tmp, out)
        return [str(a).replace("TMP", str(tmp)) for a in argv]
    return prepare


def fifo(name: str):
    def make(tmp: Path, out: Path) -> None:
        os.mkfifo(tmp / name)
    return make


def nothing(tmp: Path, out: Path) -> None:
    pass


def hard_link_results(tmp: Path, out: Path) -> None:
    os.link(out / "results.json", tmp / "results-copy.json")


def edit_results(change: Callable[[dict], object]):
    def make(tmp: Path, out: Path) -> None:
        res = json.loads((out / "results.json").read_text())
        res = change(res) or res
        (out / "results.json").write_text(res if isinstance(res, str) else json.dumps(res))
    return make


def _claim(value):
    def change(res):
        res["experiments"]["init-scale"]["claim"] = value
    return change


def both(*steps):
    def make(tmp, out):
        for step in steps:
            step(tmp, out)
    return make


REPORT = ["report", "TMP/out"]
REPRODUCE = ["reproduce", "init-scale", *QUICK, "--out", "TMP/out"]
DEV_FULL = Path("/dev/full")

FS_CASES = [
    # -- writes onto devices, FIFOs and through links ---------------------------------------
    FsCase("report-markdown-dev-full", with_setup(nothing, [*REPORT, "--markdown", DEV_FULL]),
           ("--markdown:", "a regular file or a new file name", "a character device")),
    FsCase("report-markdown-fifo", with_setup(fifo("md.fifo"),
                                              [*REPORT, "--markdown", "TMP/md.fifo"]),
           ("--markdown:", "a regular file", "a FIFO")),
    FsCase("report-markdown-link-to-stdout",
           with_setup(lambda t, o: os.symlink("/proc/self/fd/1", t / "md"),
                      [*REPORT, "--markdown", "TMP/md"]),
           ("--markdown:", "not a symbolic link", "md")),
    FsCase("report-markdown-link-to-victim",
           with_setup(lambda t, o: os.symlink(t / "victim" / "v.txt", t / "md"),
                      [*REPORT, "--markdown", "TMP/md"]),
           ("--markdown:", "not a symbolic link", "md")),
    FsCase("bench-json-dev-full", with_setup(nothing, ["bench", "--tiny", "--json", DEV_FULL]),
           ("--json:", "a regular file", "a character device")),
    FsCase("bench-json-fifo", with_setup(fifo("b.json"), ["bench", "--tiny", "--json",
                                                          "TMP/b.json"]),
           ("--json:", "a regular file", "a FIFO")),
    FsCase("bench-json-link", with_setup(lambda t, o: os.symlink(t / "victim" / "v.txt",
                                                                 t / "b.json"),
                                         ["bench", "--tiny", "--json", "TMP/b.json"]),
           ("--json:", "not a symbolic link", "b.json")),
    # -- a results folder holding links (a tarball keeps them) ------------------------------
    FsCase("report-lock-link-to-victim",
           with_setup(link(".normlab.lock", "TMP/victim/v.txt"), REPORT),
           ("DIR:", "regular files and folders", ".normlab.lock", "a symbolic link")),
    FsCase("reproduce-lock-link-to-victim",
           with_setup(link(".normlab.lock", "TMP/victim/v.txt"), REPRODUCE),
           ("--out:", "regular files and folders", ".normlab.lock", "a symbolic link")),
    FsCase("report-write-test-link-is-left-alone",   # the probe is a new unique file now
           with_setup(link(".normlab-write-test", "TMP/victim/v.txt"), REPORT), (), rc=0),
    FsCase("report-experiment-folder-link",
           with_setup(link("init-scale", "TMP/victim"), REPORT),
           ("DIR:", "init-scale", "a symbolic link")),
    FsCase("report-csv-link", with_setup(link("init-scale/metrics.csv", "TMP/victim/v.txt"),
                                         REPORT),
           ("DIR:", "metrics.csv", "a symbolic link")),
    FsCase("report-html-link", with_setup(link("report.html", "TMP/victim/v.txt"), REPORT),
           ("DIR:", "report.html", "a symbolic link")),
    FsCase("report-html-fifo", with_setup(lambda t, o: ((o / "report.html").unlink(),
                                                        os.mkfifo(o / "report.html")), REPORT),
           ("DIR:", "report.html", "a FIFO")),
    FsCase("reproduce-checkpoints-link",
           with_setup(link("checkpoints", "TMP/victim"), REPRODUCE),
           ("--out:", "checkpoints", "a symbolic link")),
    FsCase("reproduce-checkpoint-file-link",
           with_setup(link("checkpoints/init-scale/seed1000/bn.done", "TMP/victim/v.txt"),
                      REPRODUCE),
           ("--out:", "bn.done", "a symbolic link")),
    FsCase("report-results-json-link-out-of-dir",   # reading does not follow links either
           with_setup(lambda t, o: (shutil.move(o / "results.json", t / "victim" / "r.json"),
                                    os.symlink(t / "victim" / "r.json", o / "results.json")),
                      REPORT),
           ("DIR:", "results.json", "a symbolic link")),
    # -- writing over the command's own inputs ---------------------------------------------
    FsCase("report-markdown-over-results-json",
           with_setup(nothing, [*REPORT, "--markdown", "TMP/out/results.json"]),
           ("--markdown:", "other than DIR/results.json", "results.json")),
    FsCase("report-markdown-over-report-html",
           with_setup(nothing, [*REPORT, "--markdown", "TMP/out/report.html"]),
           ("--markdown:", "other than DIR/report.html", "report.html")),
    FsCase("report-markdown-over-a-figure",
           with_setup(nothing, [*REPORT, "--markdown", "TMP/out/init-scale/metrics.csv"]),
           ("--markdown:", "other than", "metrics.csv")),
    FsCase("report-markdown-hard-link-to-results",
           with_setup(hard_link_results, [*REPORT, "--markdown", "TMP/results-copy.json"]),
           ("--markdown:", "other than DIR/results.json", "results-copy.json")),
    FsCase("fold-out-link-to-victim",
           with_setup(lambda t, o: os.symlink(t / "victim" / "v.txt", t / "f.npz"),
                      ["fold", "TMP/m.npz", "-o", "TMP/f.npz", "--input-shape", "1,3,4,4"]),
           ("--out:", "not a symbolic link", "f.npz")),
    FsCase("fold-out-fifo", with_setup(fifo("f.npz"), ["fold", "TMP/m.npz", "-o", "TMP/f.npz",
                                                       "--input-shape", "1,3,4,4"]),
           ("--out:", "a regular file", "a FIFO")),
    # -- empty paths are the current directory to pathlib -----------------------------------
    FsCase("reproduce-out-empty", with_setup(nothing, ["reproduce", "init-scale", *QUICK,
                                                       "--out", ""]),
           ("--out:", "a path", "''")),
    FsCase("report-dir-empty", with_setup(nothing, ["report", ""]), ("DIR:", "a path", "''")),
    FsCase("report-markdown-empty", with_setup(nothing, [*REPORT, "--markdown", ""]),
           ("--markdown:", "a path", "''")),
    # -- results.json contents that crashed after files were written ------------------------
    FsCase("report-claim-is-a-number", with_setup(edit_results(_claim(3)), REPORT),
           ("DIR:", "experiments['init-scale'].claim", "a string", "int")),
    FsCase("report-results-100000-deep",
           with_setup(edit_results(lambda r: "[" * 100000 + "]" * 100000), REPORT),
           ("DIR:", "not a normlab results file", "RecursionError")),
    FsCase("report-unknown-experiment-name",
           with_setup(edit_results(lambda r: r["experiments"].update(
               {"\x1b[2Jx": r["experiments"]["init-scale"]})), REPORT),
           ("DIR:", "one of normlab's experiments", "\\x1b[2Jx")),
]


def _prepare_fold_input(tmp: Path) -> None:
    from tests.test_bad_input import BN_ARCHIVE

    BN_ARCHIVE(tmp)


def _run_in_process(argv: list, env: dict | None = None):
    from typer.testing import CliRunner

    from normlab.cli import app

    return CliRunner().invoke(app, argv, env={"NORMLAB_CI_SCALE": "0.02", **(env or {})})


@pytest.fixture
def scene(tmp_path, digits_run):
    """tmp/out: a copy of a real results folder; tmp/victim: files outside it."""
    out = tmp_path / "out"
    shutil.copytree(digits_run, out, symlinks=True)
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "v.txt").write_bytes(VICTIM)
    _prepare_fold_input(tmp_path)
    return tmp_path, out


def check_refused(res_code: int, output: str, parts: tuple, rc: int = 2,
                  progress: bool = False) -> None:
    """Exit code ``rc``, no traceback, and for 2 one line naming ``parts`` (``progress``: the
    last line, after the run's progress lines)."""
    assert res_code == rc, output
    assert "Traceback" not in output, output
    if rc == 2:
        lines = output.strip().splitlines()
        if progress:
            assert lines[-1].startswith("error:") and sum("error" in ln for ln in lines) == 1
            lines = lines[-1:]
        assert len(lines) == 1, output
        for part in parts:
            assert part in lines[0], f"{part!r} not in {lines[0]!r}"
        assert "\x1b" not in output


def test_filesystem_table_is_large_and_ids_unique():
    assert len(FS_CASES) >= 25
    assert len({c.id for c in FS_CASES}) == len(FS_CASES)


@pytest.mark.parametrize("case", FS_CASES, ids=[c.id for c in FS_CASES])
def test_files_and_folders_are_refused_without_writing(case, scene):
    tmp, out = scene
    argv = case.prepare(tmp, out)
    before = tree(tmp)
    device = DEV_FULL.exists() and stat.S_ISCHR(os.lstat(DEV_FULL).st_mode)
    res = _run_in_process(argv)
    check_refused(res.exit_code, res.output, case.parts, case.rc)
    after = tree(tmp)
    assert (tmp / "victim" / "v.txt").read_bytes() == VICTIM
    if case.rc == 2:
        assert after == before   # nothing lost in OUT, nothing written anywhere
    else:   # went on: every link and the victim are as they were
        assert {k: v for k, v in after.items() if v[0] == "link"} == \
            {k: v for k, v in before.items() if v[0] == "link"}
    if device:
        assert stat.S_ISCHR(os.lstat(DEV_FULL).st_mode)


# -- disk full: a tmpfs that is full (or, where no tmpfs can be mounted, RLIMIT_FSIZE) -------
def _ignore_sigxfsz_and_limit(limit: int):
    def preexec() -> None:   # EFBIG instead of being killed by SIGXFSZ
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


def _fill(folder: Path) -> None:
    # unbuffered, block by block down to single bytes: a buffered file would raise ENOSPC
    # again when it is closed, whatever the loop caught
    with open(folder / ".filler", "wb", buffering=0) as f:
        for block in (65536, 4096, 1):
            try:
                while f.write(b"\0" * block) == block:
                    pass
            except OSError:
                pass


@pytest.fixture
def small_disk(tmp_path):
    """A folder on a fresh 8 MB tmpfs (None where mounting is not allowed)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)],
                        capture_output=True).returncode == 0
    yield mnt if ok else None
    if ok:
        subprocess.run(["umount", str(mnt)], capture_output=True)


@pytest.mark.parametrize("command, keep_lock, limit, where", [
    ("reproduce", True, 64, "checkpointed"),   # finished runs skipped: finalize's CSV fails
    ("report", False, 0, ".normlab.lock"),   # the lock is the first write
], ids=["reproduce-disk-full-in-finalize", "report-disk-full-at-the-lock"])
def test_disk_full_is_one_line_and_loses_nothing(command, keep_lock, limit, where, small_disk,
                                                 digits_run, tmp_path):
    base = small_disk or tmp_path
    out = base / "out"
    shutil.copytree(digits_run, out)
    if not keep_lock:
        (out / ".normlab.lock").unlink()
    preexec = None
    if small_disk is not None:
        _fill(small_disk)
    else:
        preexec = _ignore_sigxfsz_and_limit(limit)
    results = (out / "results.json").read_bytes()
    argv = ["report", out] if command == "report" else [
        "reproduce", "paper-fig1", "init-scale", *QUICK, "--out", out]
    proc = subprocess.run([*NORMLAB, *map(str, argv)], capture_output=True, text=True, env=ENV,
                          timeout=300, preexec_fn=preexec)
    check_refused(proc.returncode, proc.stderr, ("cannot write", where),
                  progress=command == "reproduce")
    assert (out / "results.json").read_bytes() == results
    assert not list(out.rglob("*.tmp"))   # no half-written file left behind


# -- bombs: refused by the cost checks before any allocation ----------------------------------
def _npz(path: Path, layers, arrays=None, compressed=True) -> None:
    spec = json.dumps({"format": "normlab.sequential/1", "dtype": "float32", "layers": layers})
    (np.savez_compressed if compressed else np.savez)(path, __architecture__=np.array(spec),
                                                      **(arrays or {}))


def bomb_padding(tmp: Path) -> list:
    _npz(tmp / "m.npz", [{"type": "Conv2d", "args": [1, 1, 1], "kwargs": {"padding": 7000}}],
         {"0.weight": np.ones((1, 1, 1, 1), np.float32), "0.bias": np.zeros(1, np.float32)})
    return ["fold", tmp / "m.npz", "-o", tmp / "f.npz", "--input-shape", "1,1,1,1"]


def bomb_relus(tmp: Path) -> list:
    _npz(tmp / "m.npz", [{"type": "ReLU"}] * 1_000_000)
    return ["fold", tmp / "m.npz", "-o", tmp / "f.npz", "--input-shape", "1,1"]


def bomb_relus_small_spec(tmp: Path) -> list:
    _npz(tmp / "m.npz", [{"type": "ReLU"}] * 20_000)
    return ["fold", tmp / "m.npz", "-o", tmp / "f.npz", "--input-shape", "1,1"]


def bomb_linear_copies(tmp: Path) -> list:
    n = 16000
    _npz(tmp / "m.npz", [{"type": "Linear", "args": [n, n]}],
         {"0.weight": np.zeros((n, n), np.float32), "0.bias": np.zeros(n, np.float32)})
    return ["fold", tmp / "m.npz", "-o", tmp / "f.npz", "--input-shape", f"1,{n}"]


def bomb_idx(tmp: Path) -> list:
    """A 1 MB gzip IDX file whose header declares 1.3 million 28x28 images (1 GB): deflate
    could hold that much in 1 MB, so only the size cap refuses it, before decompressing."""
    folder = tmp / "mnist"
    folder.mkdir()
    n, side = 1_300_000, 28
    body = np.random.default_rng(0).integers(0, 256, 1 << 20, dtype=np.uint8).tobytes()
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(
        b"\x00\x00\x08\x03" + struct.pack(">III", n, side, side) + body, compresslevel=1))
    from tests.data.test_data import write_idx
    write_idx(folder / "train-labels-idx1-ubyte", np.zeros(n, np.uint8))
    write_idx(folder / "t10k-images-idx3-ubyte", np.zeros((10, side, side), np.uint8))
    write_idx(folder / "t10k-labels-idx1-ubyte", np.zeros(10, np.uint8))
    return ["reproduce", "init-scale", "--data", f"mnist:{folder}", "--out", tmp / "o"]


# Runs the CLI once everything is imported, and reports the seconds and the peak RSS growth
# of the bad call alone (what the cost checks must keep small), under an address-space limit.
PROBE = """
import json, resource, sys, time
from typer.testing import CliRunner
import normlab.cli, normlab.cli.fold_command, normlab.cli.reproduce_command, normlab.data
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
res = CliRunner().invoke(normlab.cli.app, sys.argv[1:])
seconds = time.perf_counter() - t0
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024
print(json.dumps({"rc": res.exit_code, "output": res.output, "seconds": seconds,
                  "grown": grown}))
"""
LIMIT_AS = 2 << 30   # the probe process' whole address space (numba reserves a lot of it)
MAX_GROWTH = 200 << 20


def _limit_as() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT_AS, LIMIT_AS))


@pytest.mark.parametrize("make, parts", [
    (bomb_padding, ("architecture:", "at most 1073741824 bytes", "1x1x1x1")),
    (bomb_relus, ("architecture:", "a spec of at most", "bytes")),
    (bomb_relus_small_spec, ("architecture.layers:", "at most 4096 layers", "20000")),
    (bomb_linear_copies, ("architecture:", "at most 1073741824 bytes", "256016000")),
    (bomb_idx, ("--data:", "at most 268435456 bytes", "train-images")),
], ids=["fold-conv-padding-7000", "fold-million-relus", "fold-20000-relus",
        "fold-linear-16000-copies", "data-idx-gzip-bomb"])
def test_bombs_are_refused_before_allocating(make, parts, tmp_path):
    argv = [str(a) for a in make(tmp_path)]
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True,
                          text=True, env=ENV, timeout=300, preexec_fn=_limit_as)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    check_refused(got["rc"], got["output"], parts)
    assert got["seconds"] < 1.0, got
    assert got["grown"] < MAX_GROWTH, got
    assert not (tmp_path / "f.npz").exists() and not (tmp_path / "o").exists()


def test_python_dash_m_normlab_runs_the_cli():
    proc = subprocess.run([sys.executable, "-m", "normlab", "--version"], capture_output=True,
                          text=True, env=ENV, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("normlab "), proc.stderr
    proc = subprocess.run([sys.executable, "-m", "normlab", "list"], capture_output=True,
                          text=True, env=ENV, timeout=120)
    assert proc.returncode == 0 and "paper-fig1" in proc.stdout


# -- text from data, printed or written: escaped by the one rule (normlab._escape) -----------
def _set(*path_and_value):
    *path, value = path_and_value

    def change(res):
        target = res
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


SCRIPT = "<script>alert(1)</script>"
# id -> (change to results.json, what the terminal output must show instead of the raw text)
ESCAPE_CASES = {
    "markdown-script-in-data-description": (_set("data", "description", SCRIPT), None),
    "markdown-script-in-engine": (_set("config", "engine", SCRIPT), None),
    "markdown-row-break-in-scale-note": (_set("experiments", "init-scale", "scale_note",
                                              "a\r\n| injected | row |\n" + SCRIPT), None),
    "markdown-link-and-code-in-timing": (_set("timing", "init-scale",
                                              "[x](javascript:alert(1)) `y` <b>z</b>"), None),
    # the terminal summary prints no claim (one line per claim: issue 29), so no check of
    # what it shows; the raw characters must still reach neither the terminal nor the Markdown
    "terminal-escape-in-claim": (_set("experiments", "init-scale", "claim",
                                      "\x1b[2J\x1b]0;pwned\x07claim \x9b31m"), None),
    "terminal-bidi-override-in-claim": (_set("experiments", "init-scale", "claim",
                                             "safe \u202etxt.exe"), None),
    # the data's name is in the summary's "no reference for this run's configuration" note
    "terminal-escape-in-data-name": (_set("data", "name", "\x1b[2J\x1b]0;pwned\x07 \x9b31m"),
                                     "\\x1b[2J"),
    "terminal-bidi-override-in-data-name": (_set("data", "name", "safe \u202etxt.exe"),
                                            "\\u202e"),
}


def _table_widths(md: str) -> set[int]:
    """The number of unescaped pipes in each row of a Markdown table."""
    import re

    return {len(re.findall(r"(?<!\\)\|", line)) for line in md.splitlines()
            if line.startswith("|")}


@pytest.mark.parametrize("change, shown", list(ESCAPE_CASES.values()), ids=list(ESCAPE_CASES))
def test_text_from_results_is_escaped_everywhere(change, shown, scene):
    import re

    tmp, out = scene
    edit_results(change)(tmp, out)
    res = _run_in_process(["report", str(out), "--markdown", str(tmp / "R.md")])
    assert res.exit_code == 0, res.output
    md = (tmp / "R.md").read_text()
    html = (out / "report.html").read_text()
    for text in (res.output, md):
        assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202e]", text), text
    # no raw HTML, no link, no code span from data (escaped: \[x\](...) is text)
    assert "<script" not in md and "<b>" not in md
    assert not re.search(r"(?<!\\)\]\(", md) and "`y`" not in md
    assert "<script>alert" not in html
    for table in (t for t in md.split("\n\n") if t.lstrip().startswith("|")):
        assert len(_table_widths(table)) == 1, table   # no row broke out of its cells
    if shown is not None:
        assert shown in res.output, res.output


def test_jobs_are_capped_at_the_units_with_a_warning_above_the_cores():
    from rich.console import Console

    from normlab.cli.reproduce_command import _cap_jobs, default_jobs

    console = Console(record=True, width=200)
    assert _cap_jobs(10000, 6, console) == 6
    assert "--jobs 10000 is more than the" in console.export_text()
    quiet = Console(record=True)
    assert _cap_jobs(1, 6, quiet) == 1 and quiet.export_text() == ""
    assert _cap_jobs(default_jobs(), 1, quiet) == 1


@pytest.mark.parametrize("dtype", ["complex64", "int64", "bool"])
def test_fold_arch_refuses_a_state_dict_a_cast_would_change(dtype, torch, tmp_path):
    from normlab.cli.fold_arch import build_module

    state = build_module("conv-bn-digits").state_dict()
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key].to(getattr(torch, dtype))
    torch.save(state, tmp_path / "m.pt")
    res = _run_in_process(["fold", str(tmp_path / "m.pt"), "--arch", "conv-bn-digits", "-o",
                           str(tmp_path / "f.pt"), "--input-shape", "1,1,8,8"])
    check_refused(res.exit_code, res.output, ("MODEL:", key, f"torch.{dtype}"))
    assert not (tmp_path / "f.pt").exists()
