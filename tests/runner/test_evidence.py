"""The one verdict type: intervals over seeds, a bar per criterion, Holm over a claim's evidence
parts, demonstrations apart, censored values as ranges, equal-on-every-seed by the sign test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from normlab.runner.evidence import (
    Bound,
    Criterion,
    Interval,
    Judged,
    combine,
    holm,
    interval,
    judge,
    ratio,
    t975,
)
from normlab.runner.tdist import betainc, t_ppf, t_sf


def test_t_quantiles_match_the_table_and_shrink_to_the_normal():
    assert t975(1) == 12.706 and t975(2) == 4.303 and t975(4) == 2.776
    assert t975(100) == t975(30) == 2.042 > 1.96
    with pytest.raises(ValueError, match="df"):
        t975(0)


def test_t_distribution_matches_the_printed_table_and_the_normal():
    for df, t in enumerate((12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306), 1):
        assert t_ppf(0.975, df) == pytest.approx(t, abs=6e-4)
        assert t_sf(t, df) == pytest.approx(0.025, abs=2e-5)
    assert t_ppf(0.975, math.inf) == pytest.approx(1.959964, abs=1e-6)
    assert t_ppf(0.9975, 4) == pytest.approx(5.5976, abs=1e-3)      # 0.025 / 10, df 4
    assert t_sf(-1.0, 3) == pytest.approx(1 - t_sf(1.0, 3))
    assert betainc(2.0, 3.0, 0.4) == pytest.approx(0.5248, abs=1e-4)  # 1 - sum_{k<2} B(4,.4)
    with pytest.raises(ValueError, match="df"):
        t_sf(1.0, 0)


def test_interval_is_the_student_t_interval_of_the_mean():
    v = [0.1, 0.3, 0.2, 0.4, 0.5]
    iv = interval(v)
    half = t_ppf(0.975, 4) * np.std(v, ddof=1) / math.sqrt(5)     # 2.7764 (table: 2.776)
    assert iv.mean == pytest.approx(0.3) and iv.lo == pytest.approx(0.3 - half)
    assert iv.hi == pytest.approx(0.3 + half) and iv.per_seed == tuple(v)
    assert not iv.test_noise and iv.censored == 0


def test_test_noise_widens_the_interval_and_lowers_the_degrees_of_freedom():
    v = [0.1, 0.3, 0.2, 0.4, 0.5]
    rng = np.random.default_rng(0)
    test = (np.asarray(v) + rng.normal(0, 0.2, (500, 1))).tolist()   # a common shift per draw
    wide, narrow = interval(v, test=test), interval(v)
    assert wide.test_noise and wide.hi - wide.lo > 2 * (narrow.hi - narrow.lo)
    assert wide.low_est.df > narrow.low_est.df == 4     # Welch-Satterthwaite


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


def test_equal_on_every_seed_is_judged_by_the_sign_test_not_a_zero_width_interval():
    six, two = interval([1.0] * 6), interval([3.33] * 2)
    assert six.constant and six.text() == "1 on every seed" and two.text() == "3.33 on every seed"
    # the bar is inclusive; six seeds give p = 1/64 < 0.025, two give 1/4
    assert Criterion("p", "s", 1.0).judge(six) == "holds"
    assert Criterion("p", "s", 1.0, "<=").judge(six) == "holds"
    assert Criterion("p", "s", 3.0).judge(two) == "inconclusive"
    assert Criterion("p", "s", 2.0).judge(six) == "does not hold"
    assert interval([1.0] * 5).to_json()["constant"] is True
    with pytest.raises(ValueError, match="direction"):
        Criterion("p", "s", 1.0, ">")
    with pytest.raises(ValueError, match="role"):
        Criterion("p", "s", 1.0, role="tautology")


def _judged(verdict: str, precondition: bool = False, role: str = "evidence") -> Judged:
    c = Criterion("p", "s", 0.0, precondition=precondition, role=role)
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
        for p in exp.published:  # (p.ours names a statistic: tests/experiments/test_mechanism.py)
            assert p.source and p.where and p.value and p.setup, (exp.name, p)


def test_demonstrations_never_make_a_claim_hold():
    demo = _judged("shown", role="demonstration")
    assert combine([demo, _judged("shown", role="demonstration")]) == "demonstrated"
    assert combine([demo, _judged("inconclusive")]) == "inconclusive"
    assert combine([demo, _judged("holds")]) == "holds"      # held by the evidence part alone
    assert combine([_judged("not shown", role="demonstration"), _judged("holds")]) == \
        "does not hold"
    assert combine([_judged("not shown", role="demonstration")]) == "does not hold"
    with pytest.raises(ValueError, match="precondition"):
        Criterion("p", "s", 0.0, precondition=True, role="demonstration")


def test_a_demonstration_only_claim_never_reads_holds():
    crit = [Criterion("a", "x", 1.0, role="demonstration"),
            Criterion("b", "y", 2.0, "<=", role="demonstration")]
    for x, y in ((5.0, 1.0), (0.5, 1.0), (5.0, 3.0)):
        parts = judge(crit, [interval([x] * 9), interval([y] * 9)])
        verdict = combine(parts)
        assert verdict != "holds" and verdict in ("demonstrated", "does not hold")
        assert (verdict == "demonstrated") == (x >= 1.0 and y <= 2.0)
        assert all(p.p_holds is None for p in parts)     # no p-values: nothing is tested


def test_a_demonstration_must_hold_on_every_seed():
    c = Criterion("a", "x", 1.0, role="demonstration")
    assert judge([c], [interval([1.5, 2.0, 1.2])])[0].verdict == "shown"
    assert judge([c], [interval([1.5, 0.9, 3.0])])[0].verdict == "not shown"


def test_holm_adjusted_p_values():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5] and holm([0.02, 0.001]) == pytest.approx([0.02, 0.002])


def test_holm_keeps_two_borderline_parts_from_both_holding():
    # each part's p of 'holds' is about 0.02 < 0.025 alone; Holm asks 0.0125 of the smaller
    v = [1.0, 1.4, 1.2, 1.6, 1.3, 1.5, 1.1]
    se = np.std(v, ddof=1) / math.sqrt(len(v))
    bar = float(np.mean(v)) - t_ppf(0.98, len(v) - 1) * se
    crit = [Criterion("a", "x", bar), Criterion("b", "y", bar)]
    alone = judge(crit[:1], [interval(v)])[0]
    both = judge(crit, [interval(v), interval(v)])
    assert alone.verdict == "holds" and alone.p_holds == pytest.approx(0.02, abs=1e-6)
    assert [p.verdict for p in both] == ["inconclusive", "inconclusive"]
    assert both[0].p_holds == pytest.approx(0.04, abs=1e-6)
    # a demonstration beside them is not part of the family
    demo = Criterion("c", "z", 0.0, role="demonstration")
    assert judge([crit[0], demo], [interval(v), interval([1.0] * 7)])[0].verdict == "holds"


def test_a_censored_seed_enters_as_its_range():
    iv = interval([2.0, 2.5, Bound(3.0, math.inf), 2.2, 2.8], log=True)
    assert iv.censored == 1 and iv.hi == math.inf and iv.upper[2] == math.inf
    assert iv.text().startswith("at least ") and "(censored 1 of 5)" in iv.text()
    assert iv.to_json()["censored"] == "1 of 5"
    # the lower limit uses the lower end: the same as if that seed had been exactly 3.0
    exact = interval([2.0, 2.5, 3.0, 2.2, 2.8], log=True)
    assert iv.lo == pytest.approx(exact.lo) and iv.mean == pytest.approx(exact.mean)
    assert Criterion("p", "s", 1.5, log=True).judge(iv) == "holds"
    # ... and a claim it might contradict cannot be refuted by an unbounded value
    assert Criterion("p", "s", 100.0, log=True).judge(iv) == "inconclusive"
    assert Criterion("p", "s", 100.0, log=True).judge(exact) == "does not hold"
    assert ratio(Bound(4.0, math.inf), 2.0) == Bound(2.0, math.inf)
    assert ratio(4.0, Bound(2.0, 8.0)) == Bound(0.5, 2.0) and ratio(4.0, 2.0) == 2.0


def test_huge_degrees_of_freedom_and_rounding_noise_give_sane_intervals():
    # seeds equal up to rounding, the test set's noise alone: a normal interval, not 1e15
    iv = interval([0.001, 0.0010000000000000009, 0.0009999999999998899],
                  test=(0.001 + np.random.default_rng(0).normal(0, 0.002, (300, 1))).tolist())
    assert iv.low_est.df == math.inf and -0.01 < iv.lo < 0.001 < iv.hi < 0.01
    assert t_ppf(0.975, 4.6e53) == pytest.approx(1.959964, abs=1e-6)
    assert interval([0.09, 0.09000000000000001, 0.09]).text() == "0.09 on every seed"
