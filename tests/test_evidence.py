"""The one verdict type: intervals over seeds, a bar per criterion, one combination rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from normlab.runner.evidence import Criterion, Interval, Judged, combine, interval, t975


def test_t_quantiles_match_the_table_and_shrink_to_the_normal():
    assert t975(1) == 12.706 and t975(2) == 4.303 and t975(4) == 2.776
    assert t975(100) == t975(30) == 2.042 > 1.96
    with pytest.raises(ValueError, match="df"):
        t975(0)


def test_interval_is_the_student_t_interval_of_the_mean():
    v = [0.1, 0.3, 0.2, 0.4, 0.5]
    iv = interval(v)
    half = 2.776 * np.std(v, ddof=1) / math.sqrt(5)
    assert iv.mean == pytest.approx(0.3) and iv.lo == pytest.approx(0.3 - half)
    assert iv.hi == pytest.approx(0.3 + half) and iv.per_seed == tuple(v)


def test_log_interval_is_of_the_geometric_mean():
    iv = interval([2.0, 0.5], log=True)
    assert iv.mean == pytest.approx(1.0) and iv.lo * iv.hi == pytest.approx(1.0)
    assert iv.lo < 0.5 and iv.hi > 2.0
    with pytest.raises(ValueError, match="log-scale"):
        interval([1.0, 0.0], log=True)


def test_one_seed_is_its_own_zero_width_interval_and_nan_is_no_interval():
    iv = interval([3.0])
    assert (iv.mean, iv.lo, iv.hi) == (3.0, 3.0, 3.0) and "1 seed" in iv.text()
    assert math.isnan(interval([1.0, None, 2.0]).lo)
    assert Criterion("x", "s", 0.0).judge(interval([1.0, float("nan")])) == "inconclusive"
    inf = interval([math.inf, math.inf], log=True)
    assert inf.lo == inf.hi == math.inf


@pytest.mark.parametrize("values,direction,expected", [
    ([2.0, 2.1, 1.9], ">=", "holds"),            # the whole interval above the bar
    ([0.5, 0.6, 0.4], ">=", "does not hold"),    # wholly below
    ([0.5, 2.0, 1.2], ">=", "inconclusive"),     # straddles it
    ([0.5, 0.6, 0.4], "<=", "holds"),
    ([2.0, 2.1, 1.9], "<=", "does not hold"),
])
def test_criterion_reads_the_whole_interval(values, direction, expected):
    assert Criterion("part", "s", 1.0, direction).judge(interval(values)) == expected


def test_the_bar_is_inclusive_and_directions_are_checked():
    assert Criterion("p", "s", 1.0).judge(interval([1.0, 1.0])) == "holds"
    assert Criterion("p", "s", 1.0, "<=").judge(interval([1.0, 1.0])) == "holds"
    with pytest.raises(ValueError, match="direction"):
        Criterion("p", "s", 1.0, ">")


def _judged(verdict: str, precondition: bool = False) -> Judged:
    c = Criterion("p", "s", 0.0, precondition=precondition)
    return Judged(c, Interval((0.0,), 0.0, 0.0, 0.0), verdict)


@pytest.mark.parametrize("parts,expected", [
    (["holds", "holds"], "holds"),
    (["holds", "inconclusive"], "inconclusive"),
    (["holds", "does not hold"], "does not hold"),
    (["inconclusive", "does not hold"], "does not hold"),
])
def test_one_combination_rule(parts, expected):
    assert combine([_judged(v) for v in parts]) == expected


@pytest.mark.parametrize("pre", ["does not hold", "inconclusive"])
def test_an_unmet_precondition_makes_any_claim_inconclusive(pre):
    for claim in ("holds", "does not hold"):
        assert combine([_judged(pre, True), _judged(claim)]) == "inconclusive"
    assert combine([_judged("holds", True), _judged("does not hold")]) == "does not hold"


def test_combine_needs_a_claim():
    with pytest.raises(ValueError, match="parts"):
        combine([])
    with pytest.raises(ValueError, match="not a precondition"):
        combine([_judged("holds", True)])


def test_every_experiment_declares_criteria_and_published_numbers():
    from normlab.experiments import EXPERIMENTS

    for exp in EXPERIMENTS.values():
        assert exp.criteria and exp.published, exp.name
        assert all(not c.precondition for c in exp.criteria[-1:]), exp.name
        assert len({c.part for c in exp.criteria}) == len(exp.criteria), exp.name
        for p in exp.published:   # (that p.ours names a statistic: tests/test_mechanism.py)
            assert p.source and p.where and p.value and p.setup, (exp.name, p)
