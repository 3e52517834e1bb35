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
from dataclasses import asdict, dataclass, field

import numpy as np

from .tdist import t_ppf, t_sf

VERDICTS = ("holds", "does not hold", "inconclusive", "demonstrated")
PART_VERDICTS = ("holds", "does not hold", "inconclusive", "shown", "not shown")
ROLES = ("evidence", "demonstration")
ALPHA = 0.025     # per direction: one side of a two-sided 95% interval
LEVEL = 0.95
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
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """t_{0.975, df} from the printed table; above 30 degrees of freedom the df = 30 value."""
    if df < 1:
        raise ValueError(f"df: expected >= 1 degree of freedom, got {df}")
    return _T975[min(df, len(_T975)) - 1]


@dataclass(frozen=True)
class Bound:
    """A censored value: only known to lie in [lo, hi] (``hi`` may be inf)."""

    lo: float
    hi: float

    def __post_init__(self) -> None:
        if not self.lo <= self.hi:
            raise ValueError(f"Bound: expected lo <= hi, got [{self.lo}, {self.hi}]")


def ratio(num, den):
    """``num / den`` for positive floats or :class:`Bound` s: a Bound when either is censored."""
    a = num if isinstance(num, Bound) else Bound(float(num), float(num))
    b = den if isinstance(den, Bound) else Bound(float(den), float(den))
    if not isinstance(num, Bound) and not isinstance(den, Bound):
        return a.lo / b.lo
    with np.errstate(divide="ignore"):
        lo = a.lo / b.hi if b.hi > 0 else math.inf
        hi = a.hi / b.lo if b.lo > 0 else math.inf
    return Bound(lo, hi)


def ends(values) -> tuple[np.ndarray, np.ndarray, int]:
    """(lower ends, upper ends, number of censored values) of floats, None (NaN) and Bounds."""
    lo, hi, censored = [], [], 0
    for v in values:
        if isinstance(v, Bound):
            lo.append(v.lo)
            hi.append(v.hi)
            censored += v.lo != v.hi
        else:
            x = np.nan if v is None else float(v)
            lo.append(x)
            hi.append(x)
    return np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64), censored


@dataclass(frozen=True)
class Estimate:
    """One series (the lower or the upper ends) on the judged scale: mean, standard error,
    Welch-Satterthwaite degrees of freedom, and n."""

    mean: float
    se: float
    df: float
    n: int

    def half(self, level: float = LEVEL) -> float:
        if self.se == 0 or math.isnan(self.se) or self.n < 2:
            return 0.0 if self.se == 0 or self.n < 2 else math.nan
        return t_ppf(0.5 + level / 2, self.df) * self.se

    def p_above(self, bar: float, strict: bool) -> float:
        """One-sided p-value that the true mean is above ``bar`` (H0: at most ``bar``)."""
        return self._p(self.mean - bar, strict)

    def p_below(self, bar: float, strict: bool) -> float:
        return self._p(bar - self.mean, strict)

    def _p(self, gap: float, strict: bool) -> float:
        if math.isnan(gap):
            return 1.0
        if self.se == 0 or self.n < 2:     # equal on every seed: the sign test
            return 0.5 ** self.n if (gap > 0 or (gap == 0 and not strict)) else 1.0
        if math.isinf(gap) or math.isnan(self.se):
            return 0.0 if gap > 0 and not math.isnan(self.se) else 1.0
        return t_sf(gap / self.se, self.df)


def _test_variance(reps: np.ndarray, n: int) -> float:
    """The test set's share of the seed mean's variance, from B x n bootstrap replicates.

    The bootstrap variance of the seed mean, V_mean, holds the spread of the examples' true
    effects (common to all seeds: wanted) and each example's seed-to-seed noise / n, which the
    between-seed variance already counts. The variance of one seed's statistic, V_one (averaged
    over seeds), holds the same two with the noise undivided, so (n V_mean - V_one) / (n - 1)
    leaves the common part alone (clipped at 0); one seed: V_mean.
    """
    ok = np.all(np.isfinite(reps), axis=1)
    reps = reps[ok]
    if reps.shape[0] < 2:
        return 0.0
    v_mean = float(reps.mean(axis=1).var(ddof=1))
    if n < 2:
        return v_mean
    v_one = float(reps.var(axis=0, ddof=1).mean())
    return max(0.0, (n * v_mean - v_one) / (n - 1))


def _equal(values) -> bool:
    """Equal on every seed, up to float rounding (0.09 and 0.09000000000000001 are one value)."""
    v = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(v)):
        return bool(np.all(v == v[0]))
    return bool(np.all(np.abs(v - v[0]) <= 1e-12 * max(1.0, float(np.abs(v).max()))))


def _estimate(v: np.ndarray, reps: np.ndarray | None) -> Estimate:
    """Mean, combined standard error and degrees of freedom of one series (judged scale)."""
    n = v.size
    with np.errstate(invalid="ignore", over="ignore"):
        m = float(v.mean())
        v_seed = 0.0 if n < 2 or _equal(v) else float(v.var(ddof=1)) / n
    if math.isinf(m) or math.isnan(m):
        return Estimate(m, 0.0 if math.isinf(m) else math.nan, math.inf, n)
    v_test = 0.0
    if reps is not None:
        v_test = _test_variance(reps, n)
    total = v_seed + v_test
    df = math.inf if v_seed == 0 else total ** 2 / (v_seed ** 2 / (n - 1))
    return Estimate(m, math.sqrt(total), df, n)


@dataclass(frozen=True)
class Interval:
    """One statistic over seeds: the per-seed values (their lower ends, and the upper ends where
    some are censored), the mean and the 95% interval of the mean, and the two estimates the
    p-values come from."""

    per_seed: tuple[float, ...]
    mean: float
    lo: float
    hi: float
    log: bool = False
    upper: tuple[float, ...] | None = None       # per-seed upper ends, if any value is censored
    censored: int = 0
    test_noise: bool = False                     # the test set's sampling noise is in it
    low_est: Estimate | None = field(default=None, compare=False)
    high_est: Estimate | None = field(default=None, compare=False)

    @property
    def constant(self) -> bool:
        return self.upper is None and len(self.per_seed) > 1 and _equal(self.per_seed) \
            and self.lo == self.hi

    def to_json(self) -> dict:
        out = {"per_seed": list(self.per_seed), "mean": self.mean, "ci95": [self.lo, self.hi],
               "scale": "log" if self.log else "linear",
               "censored": f"{self.censored} of {len(self.per_seed)}",
               "test_noise": self.test_noise, "constant": self.constant, "text": self.text()}
        if self.upper is not None:
            out["per_seed_upper"] = list(self.upper)
        return out

    def text(self, digits: int = 3) -> str:
        """``mean [lo, hi]``; "x on every seed"; censoring as "(censored k of n)"."""
        f = _fmt(digits)
        n = len(self.per_seed)
        if n == 1:
            body = f"{f(self.mean)} (1 seed, no interval)"
        elif self.constant:
            body = f"{f(self.mean)} on every seed"
        else:
            body = f"{'at least ' if self.censored else ''}{f(self.mean)} " \
                   f"[{f(self.lo)}, {f(self.hi)}]"
        return body + (f" (censored {self.censored} of {n})" if self.censored else "")


def _fmt(digits: int):
    def f(v: float) -> str:
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.{digits}g}" if abs(v) >= 1000 or (v and abs(v) < 0.001) else \
            f"{round(v, digits):g}"
    return f


def interval(values, log: bool = False, test=None) -> Interval:
    """The interval of ``values`` (one per seed: floats, None for undefined, :class:`Bound`).

    ``log=True`` for ratios (the interval of the geometric mean). ``test``: the per-seed values
    recomputed under each bootstrap resample of the test examples (B rows of n values), whose
    variance of the seed mean joins the between-seed variance (module docstring). NaN (a seed
    where the statistic is undefined) makes the interval NaN, which no bar clears.
    """
    lo_v, hi_v, censored = ends(values)
    if lo_v.ndim != 1 or lo_v.size == 0:
        raise ValueError(f"values: expected a non-empty 1-D sequence, got shape {lo_v.shape}")
    reps_lo = reps_hi = None
    if test is not None and len(test):
        reps = [ends(row) for row in test]
        reps_lo = np.asarray([r[0] for r in reps])
        reps_hi = np.asarray([r[1] for r in reps])
    if log:
        if np.any(lo_v <= 0) and not censored or np.any(lo_v < 0):
            raise ValueError(f"values: a log-scale statistic must be > 0, got {lo_v.tolist()}")
        with np.errstate(divide="ignore", invalid="ignore"):
            tr = np.log
            lo_t, hi_t = tr(lo_v), tr(hi_v)
            reps_lo = None if reps_lo is None else tr(reps_lo)
            reps_hi = None if reps_hi is None else tr(reps_hi)
    else:
        lo_t, hi_t = lo_v, hi_v
    low = _estimate(lo_t, reps_lo)
    high = low if not censored else _estimate(hi_t, reps_hi)
    m, a, b = low.mean, low.mean - low.half(), high.mean + high.half()
    if log:
        m, a, b = math.exp(m), math.exp(a), math.exp(b)
    return Interval(tuple(float(x) for x in lo_v), m, a, b, log,
                    tuple(float(x) for x in hi_v) if censored else None, censored,
                    reps_lo is not None, low, high)


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
