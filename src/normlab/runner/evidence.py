"""How a claim is judged: a statistic per seed, an interval that also carries the test set's
sampling noise, a bar fixed in advance, and Holm's correction over a claim's parts.

Every experiment reduces the runs of one seed to a few named statistics (a speed-up, an accuracy
difference, a count). A :class:`Criterion` compares one statistic with one bar, chosen before any
run: the claim's effect is at least (or at most) that large. A criterion has a *role*:

* ``"evidence"``: an empirical statement that the data could contradict;
* ``"demonstration"``: a part that cannot fail by construction (arithmetic, determinism, IEEE
  behaviour). It is shown with its number, checked on every seed ("shown" / "not shown"), and
  never makes a claim hold; a claim whose parts are all demonstrations is ``"demonstrated"``.

The interval of an evidence statistic (:func:`interval`, :data:`METHOD`) is a Welch-Satterthwaite
Student-t interval of the mean over seeds (ratios on the log scale: an interval of the geometric
mean) whose variance adds, to the between-seed variance / n, the variance of the seed mean over a
paired bootstrap of the test examples (:mod:`.testnoise`): every seed is evaluated on the *same*
test set, so the noise of having drawn that test set is common to all seeds and the seeds alone
cannot show it. A value known only as a range -- a run that never reached its target within its
budget is *censored* (:class:`Bound`) -- enters with its lower end in the lower limit and its
upper end (possibly infinite) in the upper limit, so censoring can only widen the interval. A
statistic equal on every seed is reported as "x on every seed" and judged by the sign test (all n
seeds on one side of the bar: p = 0.5^n), never as a zero-width interval.

Each evidence part gets two one-sided p-values, of "it holds" (H0: the effect is on the wrong side
of the bar) and of "it does not hold" (H0: it is on the claim's side). Holm's step-down procedure
(Holm 1979) over the claim's evidence parts, at level :data:`ALPHA` per direction (one side of a
two-sided 95% interval), turns them into part verdicts (:func:`judge`), and :func:`combine` into
the claim's verdict (:data:`COMBINATION_RULE`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .intervals import LEVEL, Bound, Estimate, Interval, ends, interval, ratio, t975

__all__ = ["ALPHA", "COMBINATION_RULE", "LEVEL", "METHOD", "PART_VERDICTS", "ROLES", "VERDICTS",
           "Bound", "Criterion", "Estimate", "Interval", "Judged", "Published", "combine",
           "ends", "holm", "interval", "judge", "ratio", "t975"]

VERDICTS = ("holds", "does not hold", "inconclusive", "demonstrated")
PART_VERDICTS = ("holds", "does not hold", "inconclusive", "shown", "not shown")
ROLES = ("evidence", "demonstration")
ALPHA = 0.025     # per direction: one side of a two-sided 95% interval
METHOD = ("Welch-Satterthwaite Student-t 95% interval of the mean over seeds (log scale for "
          "ratios); for statistics computed from test accuracy its variance is the between-seed "
          "variance / n plus the test set's share of the seed mean's variance over a paired "
          "bootstrap of the test examples (the same resampled indices for every seed and every "
          "arm, 1,000 resamples, a fixed generator seed; the examples' seed-to-seed noise, "
          "already in the between-seed variance, is taken out once), because every seed reads "
          "the same test set and the seeds alone cannot show that set's sampling noise; "
          "censored values (never reached the target within the budget) enter as their range; "
          "a statistic equal on every seed is judged by the sign test (p = 0.5^n)")

# Two-sided 95% quantiles of Student's t, t_{0.975, df} for df = 1..30 (any statistics table).

@dataclass(frozen=True)
class Criterion:
    """One part of a claim: ``statistic`` compared with ``bar``, fixed before any run.

    ``direction=">="``: the claim says the statistic is at least ``bar``; ``"<="``: at most.
    ``precondition=True``: a check that the setup can show the effect (see :func:`combine`).
    ``role``: ``"evidence"`` or ``"demonstration"`` (module docstring).
    """

    part: str               # short label, e.g. "(a) speed-up to the target"
    statistic: str          # name of a statistic returned by Experiment.statistics
    bar: float
    direction: str = ">="
    log: bool = False       # judge a ratio on the log scale (interval of the geometric mean)
    precondition: bool = False
    role: str = "evidence"

    def __post_init__(self) -> None:
        if self.direction not in (">=", "<="):
            raise ValueError(f"direction: expected '>=' or '<=', got {self.direction!r}")
        if self.role not in ROLES:
            raise ValueError(f"role: expected one of {ROLES}, got {self.role!r}")
        if self.precondition and self.role != "evidence":
            raise ValueError("precondition: expected role 'evidence' (a demonstration cannot "
                             "fail, so it cannot check a setup), got a demonstration")

    def _bar(self, iv: Interval) -> float:
        if not iv.log:
            return self.bar
        return math.log(self.bar) if self.bar > 0 else -math.inf

    def p_values(self, iv: Interval) -> tuple[float, float]:
        """(p of "holds", p of "does not hold"), one-sided, before Holm's correction."""
        b, low, high = self._bar(iv), iv.low_est, iv.high_est
        if low is None or high is None:
            raise ValueError("iv: expected an Interval built by interval(), got one without "
                             "estimates")
        if self.direction == ">=":
            return low.p_above(b, strict=False), high.p_below(b, strict=True)
        return high.p_below(b, strict=False), low.p_above(b, strict=True)

    def shown(self, iv: Interval) -> bool:
        """A demonstration: the bar is met on every seed (both ends of any censored value)."""
        values = list(iv.per_seed) + list(iv.upper or ())
        if any(math.isnan(v) for v in values):
            return False
        return all(v >= self.bar if self.direction == ">=" else v <= self.bar for v in values)

    def judge(self, iv: Interval) -> str:
        """This part alone (a family of one): see :func:`judge` for a claim's parts."""
        return judge([self], [iv])[0].verdict

    def rule(self) -> str:
        kind = ("precondition" if self.precondition else
                "demonstration" if self.role == "demonstration" else "evidence")
        return f"{self.part} [{kind}]: {self.statistic} {self.direction} {self.bar:g}"


@dataclass(frozen=True)
class Judged:
    criterion: Criterion
    interval: Interval
    verdict: str
    p_holds: float | None = None     # Holm-adjusted, evidence parts only
    p_fails: float | None = None

    def text(self) -> str:
        c = self.criterion
        p = "" if self.p_holds is None else \
            f" (Holm p: holds {self.p_holds:.2g}, does not hold {self.p_fails:.2g})"
        return f"{c.part}: {self.interval.text()} vs {c.direction} {c.bar:g}{p} -> {self.verdict}"

    def to_json(self) -> dict:
        return {**asdict(self.criterion), "interval": self.interval.to_json(),
                "verdict": self.verdict, "p_holds_holm": self.p_holds,
                "p_fails_holm": self.p_fails}


def holm(p: list[float]) -> list[float]:
    """Holm-adjusted p-values (Holm 1979): sorted ascending, p_(j) * (m - j) made monotone;
    rejecting where the adjusted p <= alpha controls the family-wise error at alpha."""
    m = len(p)
    out, running = [1.0] * m, 0.0
    for j, i in enumerate(sorted(range(m), key=lambda k: p[k])):
        running = max(running, min(1.0, (m - j) * p[i]))
        out[i] = running
    return out


def judge(criteria, intervals) -> list[Judged]:
    """Part verdicts of one claim: Holm over its evidence parts (preconditions included) in each
    direction at :data:`ALPHA`; demonstrations checked on every seed."""
    evidence = [i for i, c in enumerate(criteria) if c.role == "evidence"]
    raw = [criteria[i].p_values(intervals[i]) for i in evidence]
    adj_h = holm([r[0] for r in raw])
    adj_f = holm([r[1] for r in raw])
    out = []
    for i, (c, iv) in enumerate(zip(criteria, intervals, strict=True)):
        if c.role == "demonstration":
            out.append(Judged(c, iv, "shown" if c.shown(iv) else "not shown"))
            continue
        k = evidence.index(i)
        v = ("holds" if adj_h[k] <= ALPHA else "does not hold" if adj_f[k] <= ALPHA
             else "inconclusive")
        out.append(Judged(c, iv, v, adj_h[k], adj_f[k]))
    return out


COMBINATION_RULE = (
    "Each evidence part gets a one-sided p-value for 'holds' (H0: the effect is on the wrong "
    "side of the bar) and one for 'does not hold'; Holm's step-down correction over the claim's "
    "evidence parts (preconditions included) keeps the family-wise error of each direction at "
    "2.5%, one side of a two-sided 95% interval (for a lone part: holds when the whole 95% "
    "interval clears the bar). The claim holds if every evidence part holds (Holm is "
    "conservative here -- all parts holding would need no correction -- but it makes each "
    "part's own verdict trustworthy), does not hold if any evidence part does not hold, and is "
    "inconclusive otherwise; a precondition that is not met (the setup cannot show the effect) "
    "makes it inconclusive whatever the other parts say. Demonstrations (parts that cannot fail "
    "by construction) are shown with their numbers, never make a claim hold, and make it 'does "
    "not hold' only if one is not shown; a claim of demonstrations only is 'demonstrated'.")


def combine(parts: list[Judged]) -> str:
    """The one combination rule for multi-part claims (see :data:`COMBINATION_RULE`)."""
    if not parts:
        raise ValueError("parts: expected at least one judged criterion, got none")
    demos = [p.verdict for p in parts if p.criterion.role == "demonstration"]
    evidence = [p for p in parts if p.criterion.role == "evidence"]
    if any(p.criterion.precondition and p.verdict != "holds" for p in evidence):
        return "inconclusive"
    verdicts = [p.verdict for p in evidence if not p.criterion.precondition]
    if not verdicts and not demos:
        raise ValueError("parts: expected at least one criterion that is not a precondition")
    if "not shown" in demos:
        return "does not hold"
    if not verdicts:
        return "demonstrated"
    if all(v == "holds" for v in verdicts):
        return "holds"
    return "does not hold" if "does not hold" in verdicts else "inconclusive"


@dataclass(frozen=True)
class Published:
    """What a source reports, set beside what we measure.

    ``value`` is the source's number (or words, for a qualitative claim); ``ours`` names the
    statistic of ours that corresponds (None when nothing does); ``setup`` is the source's own
    setting (data, model, steps), so a reader sees how far our scale is from it; ``comparable``
    says which of our comparisons is like the source's and where the scales differ (shown in
    the same row).
    """

    source: str
    where: str              # figure / table / section
    quantity: str
    value: str
    setup: str
    ours: str | None = None
    qualitative: bool = False
    comparable: str = ""

    def to_json(self) -> dict:
        return asdict(self)
