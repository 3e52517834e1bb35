"""One statistic over seeds as an interval (the evidence of :mod:`.evidence`): a
Welch-Satterthwaite Student-t interval of the mean over seeds (ratios on the log scale), its
variance widened by the test set's sampling noise (:mod:`.testnoise`), censored values
(:class:`Bound`) entering as their range, and a statistic equal on every seed judged by the sign
test. The method in words is :data:`normlab.runner.evidence.METHOD`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .tdist import t_ppf, t_sf

LEVEL = 0.95

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
