"""The shipped reference results and the reproduction check (issue 29, item 4): a run identical
to the reference reproduces it bit for bit, one whose statistics move by less than the tolerance
reproduces it within tolerance, a tampered one does not; an experiment the reference lacks and a
run of other seeds say there is no reference, and nothing fails. ``normlab report`` (piped, as
in CI) leads with the reproduction sentence, in the terminal and in report.html.
"""

from __future__ import annotations

import ast
import copy
import fnmatch
import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from normlab.reproduce import reference as ref_mod
from normlab.reproduce.reference import compare, decode, encode, shipped, trim

ROOT = Path(__file__).resolve().parents[2]
NORMLAB = [sys.executable, "-m", "normlab.cli"]
# cheap to summarize and to draw: the CLI tests rebuild their figures
CLI_EXPERIMENTS = ("init-scale", "conv-bn")


def _by_size(size: str) -> dict:
    refs = [r for r in shipped() if r["key"]["size"] == size]
    assert len(refs) == 1, [r["key"] for r in shipped()]
    return refs[0]


@pytest.fixture(scope="module")
def full() -> dict:
    return _by_size("full")


def as_results(reference: dict, names=None) -> dict:
    """A finished results.json of exactly the reference's runs (the texts from the registry),
    as ``normlab reproduce`` would have written it for ``names`` (default: all)."""
    from normlab import data
    from normlab.experiments import get

    key = reference["key"]
    dataset = data.load(key["data"])
    names = list(reference["experiments"]) if names is None else list(names)
    exps = {}
    for name in names:
        exp, entry = get(name), reference["experiments"][name]
        exps[name] = {"title": exp.title, "source": exp.source, "claim": exp.claim,
                      "setup": exp.setup_text(dataset, 1.0, key["size"]), "scale": 1.0,
                      "size": key["size"], "seeds": key["seeds"],
                      "scale_note": exp.scale_note(dataset, 1.0, key["size"]),
                      "runs": copy.deepcopy(entry["runs"]),
                      # what finalize recomputes; compare() alone reads these
                      "verdict": entry["verdict"], "reason": entry["reason"],
                      "criteria": copy.deepcopy(entry["criteria"])}
    return {"normlab": "0.1.0",
            "config": {"experiments": names, "quick": key["size"] == "quick",
                       "size": key["size"], "data": key["data"], "engine": key["engine"],
                       "seed": key["seeds"][0], "seeds": key["seeds"], "jobs": 1,
                       "steps_scale": key["steps_scale"]},
            "data": {"name": dataset.name, "description": dataset.describe(),
                     "source": dataset.source, "fingerprint": dataset.fingerprint},
            "environment": {"python": sys.version.split()[0]}, "experiments": exps,
            "timing": {}, "cpu_time": {}}


def test_shipped_references_are_the_documented_configurations():
    keys = {r["key"]["size"]: r["key"] for r in shipped()}
    assert keys["full"] == {"size": "full", "data": "mnist5k", "fingerprint": "ba78f64a",
                            "engine": "numpy", "seeds": [1000, 1001, 1002, 1003, 1004],
                            "steps_scale": 1.0}
    # the demo: normlab reproduce --quick (mnist5k, numpy engine, three seeds from 1000)
    assert keys["quick"] == {**keys["full"], "size": "quick", "seeds": [1000, 1001, 1002]}
    assert set(_by_size("full")["experiments"]) >= {
        "paper-fig1", "init-scale", "train-eval", "regularization", "landscape", "rnn-norm",
        "learning-rate", "batch-size", "conv-bn", "running-stats"}


def test_references_ship_in_the_wheel():
    """pyproject's package data names every reference file (they live outside a package
    with Python files, so nothing else would put them in the wheel)."""
    text = (ROOT / "pyproject.toml").read_text()   # (tomllib: Python 3.11+; normlab: 3.10+)
    table = text.split("[tool.setuptools.package-data]", 1)[1]
    patterns = ast.literal_eval(re.search(r"^normlab = (\[.*?\])$", table, re.M).group(1))
    files = sorted((ROOT / "src" / "normlab" / "data" / "reference").glob("*.json.gz"))
    assert len(files) == 2
    for f in files:
        rel = f.relative_to(ROOT / "src" / "normlab").as_posix()
        assert any(fnmatch.fnmatch(rel, p) for p in patterns), rel


def test_trim_and_encode_are_stable(full):
    results = as_results(full, ["init-scale"])
    data = encode(trim(results))
    assert data == encode(trim(copy.deepcopy(results)))   # no timestamp in the gzip
    back = json.loads(gzip.decompress(data))
    assert back["experiments"]["init-scale"]["runs"] == full["experiments"]["init-scale"]["runs"]
    assert back["key"] == full["key"]


def test_identical_run_reproduces_bit_for_bit(full):
    block = compare(as_results(full))
    assert block["reproduced"] == block["checked"] == len(full["experiments"])
    assert {r["status"] for r in block["experiments"].values()} == {"bit-identical"}
    assert block["summary"].startswith(
        f"your run reproduces the reference: {block['checked']}/{block['checked']}; "
        f"full-size verdicts: ")
    assert [r["full_verdict"] for r in block["experiments"].values()] == [
        e["verdict"] for e in full["experiments"].values()]


def _seed_value(entry: dict, statistic: str, seed_index: int, value: float) -> None:
    for c in entry["criteria"]:
        if c["statistic"] == statistic:
            c["interval"]["per_seed"][seed_index] = value


def test_tolerance_decides_between_within_and_does_not_reproduce(full):
    results = as_results(full, ["init-scale"])
    entry = results["experiments"]["init-scale"]
    entry["runs"]["std00-bn"]["metrics"]["1001"]["final_acc"] += 1e-9   # floating point moved
    stat = entry["criteria"][1]
    lo, hi = stat["interval"]["ci95"]
    allowed = ref_mod.TOLERANCE * (hi - lo) / 2
    b = stat["interval"]["per_seed"][2]
    _seed_value(entry, stat["statistic"], 2, b + 0.5 * allowed)
    row = compare(results)["experiments"]["init-scale"]
    assert row["status"] == "within tolerance", row
    assert "run std00-bn, seed 1001" in row["detail"] and "0.5 x the tolerance" in row["detail"]

    _seed_value(entry, stat["statistic"], 2, b + 2 * allowed)
    row = compare(results)["experiments"]["init-scale"]
    assert row["status"] == "does not reproduce", row
    assert "2 x the tolerance" in row["detail"]

    _seed_value(entry, stat["statistic"], 2, b)      # statistics equal again, verdict not
    entry["verdict"] = "does not hold" if full["experiments"]["init-scale"]["verdict"] != \
        "does not hold" else "holds"
    row = compare(results)["experiments"]["init-scale"]
    assert row["status"] == "does not reproduce" and "verdict" in row["detail"], row


def test_demonstrations_are_compared_by_their_verdict(full):
    """A demonstration may measure rounding itself (train-eval's eval-mode logit difference):
    its number may move when the floating point does, its verdict may not."""
    results = as_results(full, ["init-scale"])
    entry = results["experiments"]["init-scale"]
    entry["runs"]["std00-bn"]["metrics"]["1001"]["final_acc"] += 1e-9
    demo = next(c for c in entry["criteria"] if c["role"] == "demonstration")
    demo["interval"]["per_seed"] = [v * 1.5 for v in demo["interval"]["per_seed"]]
    assert compare(results)["experiments"]["init-scale"]["status"] == "within tolerance"
    demo["verdict"] = "not shown"
    row = compare(results)["experiments"]["init-scale"]
    assert row["status"] == "does not reproduce", row
    assert f"{demo['statistic']}: not shown vs the reference's shown" in row["detail"]


def test_timed_experiments_are_compared_by_the_claims_verdict_only():
    """cost's statistics are wall-clock timings: their numbers never repeat, and a part whose
    interval sits near its bar flips between runs (seen on one quiet machine); the claim's
    verdict must repeat."""
    quick = _by_size("quick")
    results = as_results(quick, ["cost"])
    entry = results["experiments"]["cost"]
    key = next(iter(entry["runs"]))
    entry["runs"][key]["metrics"]["1000"] = {**entry["runs"][key]["metrics"]["1000"],
                                             "extra timing": 1.0}
    for c in entry["criteria"]:
        c["interval"]["per_seed"] = [None if v is None else v * 3 for v in
                                     c["interval"]["per_seed"]]
    row = compare(results)["experiments"]["cost"]
    assert row["status"] == "within tolerance", row
    assert "compared by the claim's verdict only" in row["detail"]
    entry["criteria"][0]["verdict"] = "does not hold" if entry["criteria"][0]["verdict"] != \
        "does not hold" else "holds"
    assert compare(results)["experiments"]["cost"]["status"] == "within tolerance"
    entry["verdict"] = "does not hold" if entry["verdict"] != "does not hold" else "holds"
    row = compare(results)["experiments"]["cost"]
    assert row["status"] == "does not reproduce", row
    assert "the reference's" in row["detail"]


def test_a_changed_experiment_design_does_not_reproduce(full):
    results = as_results(full, ["init-scale"])
    results["experiments"]["init-scale"]["runs"]["std00-bn"]["config"]["epochs"] += 1
    row = compare(results)["experiments"]["init-scale"]
    assert row["status"] == "does not reproduce", row
    assert "run std00-bn: its configuration differs" in row["detail"]
    del results["experiments"]["init-scale"]["runs"]["std00-bn"]
    row = compare(results)["experiments"]["init-scale"]
    assert row["status"] == "does not reproduce" and "differ from the reference's" in \
        row["detail"], row


def test_experiment_missing_from_the_reference_is_said_not_failed(full):
    results = as_results(full, ["init-scale", "conv-bn"])
    partial = copy.deepcopy(full)
    del partial["experiments"]["conv-bn"]
    block = compare(results, [partial])
    assert block["experiments"]["conv-bn"] == {"status": "no reference",
                                               "detail": "no reference for this experiment",
                                               "full_verdict": None}
    assert block["experiments"]["init-scale"]["status"] == "bit-identical"
    assert (block["reproduced"], block["checked"]) == (1, 1)
    assert "no reference for conv-bn" in block["note"]
    assert block["summary"].startswith("your run reproduces the reference: 1/1;")


@pytest.mark.parametrize("change", [{"seeds": [5, 6, 7, 8, 9]}, {"engine": "torch"},
                                    {"steps_scale": 0.5}, {"size": "paper"}])
def test_other_configuration_has_no_reference(full, change):
    results = as_results(full, ["init-scale"])
    results["config"].update(change)
    block = compare(results)
    assert block["reference"] is None and block["checked"] == 0
    assert block["experiments"]["init-scale"]["status"] == "no reference"
    assert block["summary"].startswith("no reference for this run's configuration; ")
    assert "reproduction not checked" in block["note"]
    # the full-size verdict still stands beside the claim
    assert block["experiments"]["init-scale"]["full_verdict"] == \
        full["experiments"]["init-scale"]["verdict"]


def _report(folder: Path, results: dict) -> subprocess.CompletedProcess:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(results))
    # piped: stdout is not a terminal, as in `normlab report DIR | less` or CI
    return subprocess.run([*NORMLAB, "report", str(folder)], capture_output=True, text=True,
                          timeout=600)


def test_report_leads_with_reproduction_and_flags_a_tampered_metric(full, tmp_path):
    results = as_results(full, CLI_EXPERIMENTS)
    proc = _report(tmp_path / "same", results)
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert first.startswith("your run reproduces the reference: 2/2; full-size verdicts:")
    html = (tmp_path / "same" / "report.html").read_text()
    assert "your run reproduces the reference: 2/2; full-size verdicts:" in html
    written = json.loads((tmp_path / "same" / "results.json").read_text())["reproduction"]
    assert {r["status"] for r in written["experiments"].values()} == {"bit-identical"}

    # BN "learns" at no initial std on seed 1001: the claim's key statistic moves
    tampered = copy.deepcopy(results)
    for key, run in tampered["experiments"]["init-scale"]["runs"].items():
        if key.endswith("-bn"):
            run["metrics"]["1001"]["final_acc"] = 0.1
    proc = _report(tmp_path / "tampered", tampered)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("your run reproduces the reference: 1/2;")
    line = next(s for s in proc.stdout.splitlines() if s.startswith("init-scale "))
    assert re.split(r"\s{2,}", line)[3] == "no", line
    written = json.loads((tmp_path / "tampered" / "results.json").read_text())["reproduction"]
    assert written["experiments"]["init-scale"]["status"] == "does not reproduce"
    assert written["experiments"]["conv-bn"]["status"] == "bit-identical"

    other = copy.deepcopy(results)
    other["config"]["seeds"] = [7, 8, 9, 10, 11]
    proc = _report(tmp_path / "other", other)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("no reference for this run's configuration;")
    assert "reproduction not checked" in proc.stdout.replace("\n", " ")


def test_make_reference_ships_a_finished_run_and_refuses_an_unfinished_one(full, tmp_path):
    results = as_results(full, ["init-scale", "conv-bn"])
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    tool = [sys.executable, str(ROOT / "tools" / "make_reference.py")]
    proc = subprocess.run([*tool, str(path), "--into", str(tmp_path / "ref")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    written = tmp_path / "ref" / "full-mnist5k-numpy.json.gz"
    assert written.read_bytes() == encode(trim(results))
    assert "full size, mnist5k, numpy engine, seeds 1000-1004, 2 experiments" in proc.stdout

    del results["experiments"]["conv-bn"]["verdict"]
    path.write_text(json.dumps(results))
    proc = subprocess.run([*tool, str(path), "--into", str(tmp_path / "ref2")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no verdict for conv-bn" in proc.stderr
    assert not (tmp_path / "ref2").exists()


def test_make_reference_update_replaces_only_the_runs_experiments(full, tmp_path):
    """--update: one experiment rerun after a code change replaces its entry; the others stay,
    and a run of another configuration is refused with the reference unchanged."""
    tool = [sys.executable, str(ROOT / "tools" / "make_reference.py")]
    both, path = tmp_path / "both.json", tmp_path / "ref" / "full-mnist5k-numpy.json.gz"
    both.write_text(json.dumps(as_results(full, ["init-scale", "conv-bn"])))
    assert subprocess.run([*tool, str(both), "--into", str(tmp_path / "ref")],
                          capture_output=True, timeout=120).returncode == 0
    rerun = as_results(full, ["conv-bn"])
    rerun["experiments"]["conv-bn"]["verdict"] = "holds"
    one = tmp_path / "one.json"
    one.write_text(json.dumps(rerun))
    proc = subprocess.run([*tool, str(one), "--into", str(tmp_path / "ref"), "--update"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    merged = decode(path.read_bytes())
    assert list(merged["experiments"]) == ["init-scale", "conv-bn"]
    assert merged["experiments"]["conv-bn"]["verdict"] == "holds"
    assert merged["experiments"]["init-scale"] == trim(as_results(full, ["init-scale"])
                                                       )["experiments"]["init-scale"]
    assert [u["experiments"] for u in merged["updates"]] == [["conv-bn"]]

    before = path.read_bytes()
    rerun["config"]["seeds"] = [1000, 1001, 1002]
    one.write_text(json.dumps(rerun))
    proc = subprocess.run([*tool, str(one), "--into", str(tmp_path / "ref"), "--update"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--update: expected a run of the reference's" in proc.stderr
    assert path.read_bytes() == before
