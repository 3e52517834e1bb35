"""The terminal summary (issue 29, item 5): piped (not a terminal), ``normlab reproduce`` prints
the reproduction sentence and one line per claim, every line within 80 columns, with no table
borders; long texts from a results file are cut, never wrapped into a wall.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys

from normlab.report.summary import WIDTH, summary_lines
from normlab.reproduce.reference import compare, shipped

NORMLAB = [sys.executable, "-m", "normlab.cli"]
ENV = {**os.environ, "NORMLAB_CI_SCALE": "0.02"}
# a line of the summary table: claim, verdict, statistic, reproduced, full-size verdict,
# separated by at least two spaces
COLUMNS = re.compile(r"\s{2,}")


def _claim_lines(lines: list[str], names) -> dict[str, list[str]]:
    return {n: [line for line in lines if line.split(" ", 1)[0] == n] for n in names}


def test_piped_reproduce_prints_one_line_per_claim_within_80_columns(tmp_path):
    names = ("paper-fig1", "init-scale")
    out = tmp_path / "a-long-folder-name-that-makes-the-report-path-longer-than-eighty-columns"
    proc = subprocess.run([*NORMLAB, "reproduce", *names, "--quick", "--data", "digits",
                           "--seeds", "2", "--out", str(out)], capture_output=True, text=True,
                          env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    report = str((out / "report.html").resolve())
    # the report's path is never broken (it is copied); every other line fits
    assert [line for line in lines if len(line) > WIDTH and line != report] == [], lines
    assert report in lines and "Report:" in lines
    assert not any(c in proc.stdout for c in "│┃━─┏")                    # no table borders
    for name, found in _claim_lines(lines, names).items():
        assert len(found) == 1, (name, lines)
        cells = COLUMNS.split(found[0])
        results = json.loads((out / "results.json").read_text())
        assert cells[1] == results["experiments"][name]["verdict"]
        assert cells[3] == "-"        # digits at CI size: no reference
    # digits at CI size has no reference: said first, in plain words
    assert proc.stdout.startswith("no reference for this run's configuration; full-size "
                                  "verdicts: ")


def test_every_claim_of_the_references_fits_and_long_texts_are_cut():
    for ref in shipped():
        results = {"config": {"size": ref["key"]["size"], "engine": ref["key"]["engine"],
                              "seeds": ref["key"]["seeds"], "steps_scale": 1.0},
                   "data": {"name": ref["key"]["data"],
                            "fingerprint": ref["key"]["fingerprint"]},
                   "experiments": copy.deepcopy(ref["experiments"])}
        results["reproduction"] = compare(results)
        lines = summary_lines(results)
        assert max(map(len, lines)) <= WIDTH, lines
        found = _claim_lines(lines, ref["experiments"])
        assert all(len(v) == 1 for v in found.values()), found
        for name, (line,) in found.items():
            assert COLUMNS.split(line)[3] == "yes", line        # the reference reproduces itself
            assert COLUMNS.split(line)[-1] == ref["experiments"][name]["verdict"] or \
                ref["key"]["size"] != "full"

        hostile = copy.deepcopy(results)
        entry = next(iter(hostile["experiments"].values()))
        entry["verdict"] = "v" * 200
        entry["criteria"][0]["interval"].update(text="t\x1b[31m" * 50, constant=True)
        entry["criteria"][0]["precondition"] = False
        entry["criteria"][0]["role"] = "evidence"
        lines = summary_lines(hostile)
        assert max(map(len, lines)) <= WIDTH, lines
        assert "\x1b" not in "".join(lines)
