"""The ledger of the notes' statements: every mapped part exists, and the "checked" rows'
numbers are computed here (the note's number beside the exact one)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from normlab import nn
from normlab.experiments import EXPERIMENTS
from normlab.experiments.ledger import LEDGER, NOTES, STATUSES, Statement, counts
from tests.commands import normlab


def test_every_tested_statement_names_a_registered_part():
    parts = {name: {c.part for c in e.criteria} for name, e in EXPERIMENTS.items()}
    for s in LEDGER:
        if s.status == "tested":
            assert s.experiment in parts, s
            assert s.part in parts[s.experiment], (s.part, sorted(parts[s.experiment]))


def test_every_note_contributes_and_the_counts_add_up():
    c = counts()
    assert c["statements"] >= 40
    assert sum(c[s] for s in STATUSES) == c["statements"] == len(LEDGER)
    assert {s.note for s in LEDGER} == set(NOTES)
    assert len({(s.note, s.statement) for s in LEDGER}) == len(LEDGER)   # no duplicate rows


@pytest.mark.parametrize("kwargs, needle", [
    ({"note": "005", "statement": "x"}, "note"),
    ({"note": "000", "statement": "x", "status": "maybe"}, "status"),
    ({"note": "000", "statement": "x"}, "experiment and part"),
    ({"note": "000", "statement": "x", "status": "definition", "experiment": "depth",
      "part": "p"}, "experiment and part"),
    ({"note": "000", "statement": "x", "status": "not measured"}, "remark"),
])
def test_bad_statement(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        Statement(**kwargs)


def test_epsilon_10e7_is_1e6():
    assert 10e-7 == pytest.approx(1e-6, rel=1e-12) and 10e-7 != 1e-7


def test_normal_shares_beside_the_notes_66_and_99():
    share = {k: math.erf(k / math.sqrt(2)) for k in (1, 2, 3)}
    assert round(100 * share[1], 1) == 68.3 and round(100 * share[2], 1) == 95.4
    assert round(100 * share[3], 1) == 99.7
    assert share[2] < 0.99 < share[3]        # the note's "-2..2: 99%" is wrong
    assert share[1] > 0.66                   # "66%" rounds 68.3% down


def test_dlfs_momentum_09_is_pytorch_momentum_01_for_the_mean():
    """DLfS: running = 0.9 running + 0.1 batch; PyTorch: (1 - 0.1) running + 0.1 batch. The
    running mean agrees; the variance differs by m/(m-1) (DLfS keeps the biased one)."""
    rng = np.random.default_rng(1)
    bn = nn.BatchNorm1d(3, momentum=0.1)
    dl_mean, dl_var = np.zeros(3), np.zeros(3)
    for _ in range(5):
        x = rng.normal(2.0, 3.0, size=(8, 3)).astype(np.float32)
        bn.train()
        bn(x)
        dl_mean = 0.9 * dl_mean + 0.1 * x.mean(0)
        dl_var = 0.9 * dl_var + 0.1 * x.var(0)
    np.testing.assert_allclose(bn.running_mean, dl_mean, rtol=1e-5)
    # PyTorch starts running_var at 1 and averages the unbiased variance
    assert not np.allclose(bn.running_var, dl_var, rtol=1e-3)


def test_gamma_sqrt_var_beta_mean_is_the_identity():
    rng = np.random.default_rng(2)
    x = rng.normal(5.0, 2.0, size=(16, 4)).astype(np.float64)
    bn = nn.BatchNorm1d(4, eps=1e-5)
    bn.weight.data[...] = np.sqrt(x.var(0) + bn.eps)
    bn.bias.data[...] = x.mean(0)
    bn.train()
    np.testing.assert_allclose(bn(x.astype(np.float32)), x, rtol=1e-5, atol=1e-4)


def test_the_worked_example_is_train_mode():
    """The note computes -1.34 for x=1 of [1, 3, 5, 7] but calls bn.eval() first."""
    x = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]], dtype=np.float32)
    bn = nn.BatchNorm1d(2)
    bn.train()
    assert float(bn(x)[0, 0]) == pytest.approx(-3 / math.sqrt(5 + 1e-5), rel=1e-5)
    assert round(float(bn(x)[0, 0]), 2) == -1.34
    fresh = nn.BatchNorm1d(2)
    fresh.eval()
    assert float(fresh(x)[0, 0]) == pytest.approx(1 / math.sqrt(1 + 1e-5), rel=1e-6)


def test_cli_json_and_table():
    proc = normlab("list", "--ledger", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert len(rows) == len(LEDGER)
    assert {"note", "statement", "experiment", "part", "status"} <= set(rows[0])
    table = normlab("list", "--ledger")
    assert table.returncode == 0 and f"statements: {len(LEDGER)}" in table.stdout
    bad = normlab("list", "--json")
    assert bad.returncode == 2 and "--json" in bad.stderr


def test_report_and_markdown_carry_the_ledger(tmp_path):
    from normlab import data
    from normlab.report.markdown import render
    from normlab.reproduce.ledger import NOT_RUN
    from tests.pipeline import run_ci_pipeline

    results = run_ci_pipeline(["invariances"], tmp_path, data.load("digits"), seeds=2)
    rows = results["ledger"]["rows"]
    assert results["ledger"]["counts"] == counts() and len(rows) == len(LEDGER)
    mine = [r for r in rows if r["experiment"] == "invariances"]
    assert mine and all(r["verdict"] == "shown (claim: demonstrated)" for r in mine)
    assert all(r["measured"].endswith("vs <= 0") for r in mine)
    others = [r for r in rows if r["status"] == "tested" and r["experiment"] != "invariances"]
    assert others and all(r["verdict"] == NOT_RUN for r in others)
    page = (tmp_path / "report.html").read_text()
    assert 'id="ledger"' in page and "BN(aWu) = BN(Wu)" in page
    md = render(results)
    assert "The notes' statements" in md and md.count("\n| 00") == len(LEDGER)
