"""How a claim is judged: a statistic per seed, a 95% interval over seeds, a bar fixed in advance.

Every experiment reduces the runs of one seed to a few named statistics (a speed-up, an accuracy
difference, a count). Over seeds ``s, s+1, ..., s+K-1`` each statistic gets a Student-t 95%
confidence interval of its mean (:func:`interval`; ratios on the log scale, i.e. an interval of
the geometric mean). A :class:`Criterion` compares one interval with one bar, chosen before any
run: the claim's effect is at least (or at most) that large.

* **holds** when the whole interval clears the bar,
* **does not hold** when the whole interval lies on the other side of it,
* **inconclusive** when the interval contains the bar.

A claim with several parts combines them with one rule (:func:`combine`): holds if every part
holds, does not hold if any part does not hold, otherwise inconclusive. A *precondition* is a
part that checks the setup can show the effect at all (e.g. dropout must help the plain net
before "BN makes dropout unnecessary" can be judged); when it is not met the claim is
inconclusive whatever the other parts say.

The intervals capture training randomness (initial weights, batch order, dropout masks), which
is what changes with the seed, and the part of the test set's sampling noise that differs from
model to model. The test set itself is the same for every seed, so the noise of having drawn
*this* test set (the standard error of an accuracy near 0.95 on mnist5k's 1,000 test images is
0.7 points) is not in them; a bar much closer to the null than that deserves care.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

VERDICTS = ("holds", "does not hold", "inconclusive")
METHOD = "Student-t 95% interval of the mean over seeds (log scale for ratios)"

# Two-sided 95% quantiles of Student's t, t_{0.975, df} for df = 1..30 (any statistics table).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """t_{0.975, df}; above 30 degrees of freedom the df = 30 value (slightly conservative)."""
    if df < 1:
        raise ValueError(f"df: expected >= 1 degree of freedom, got {df}")
    return _T975[min(df, len(_T975)) - 1]


@dataclass(frozen=True)
class Interval:
    """One statistic over seeds: the values, their mean and the 95% interval of the mean."""

    per_seed: tuple[float, ...]
    mean: float
    lo: float
    hi: float
    log: bool = False

    def to_json(self) -> dict:
        return {"per_seed": list(self.per_seed), "mean": self.mean, "ci95": [self.lo, self.hi],
                "scale": "log" if self.log else "linear"}

    def text(self, digits: int = 3) -> str:
        """``mean [lo, hi]`` (one seed: just the value)."""
        f = _fmt(digits)
        if len(self.per_seed) == 1:
            return f"{f(self.mean)} (1 seed, no interval)"
        return f"{f(self.mean)} [{f(self.lo)}, {f(self.hi)}]"


def _fmt(digits: int):
    def f(v: float) -> str:
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.{digits}g}" if abs(v) >= 1000 or (v and abs(v) < 0.001) else \
            f"{round(v, digits):g}"
    return f


def interval(values, log: bool = False) -> Interval:
    """Mean and Student-t 95% interval of ``values`` (one per seed).

    ``log=True`` for ratios: the interval is computed for log(value) and mapped back, so it is
    an interval of the geometric mean and a 2x and a 0.5x seed average to 1x. One seed gives the
    value itself as a zero-width interval. NaN (a seed where the statistic is undefined) makes
    the whole interval NaN, which no bar clears: the verdict is inconclusive.
    """
    v = np.asarray([np.nan if x is None else x for x in values], dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"values: expected a non-empty 1-D sequence, got shape {v.shape}")
    if log:
        if np.any(v <= 0):
            raise ValueError(f"values: a log-scale statistic must be > 0, got {v.tolist()}")
        v_t = np.log(v)
    else:
        v_t = v
    with np.errstate(invalid="ignore"):
        m = float(v_t.mean())
        half = float(t975(v.size - 1) * v_t.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else 0.0
    if math.isinf(m):
        half = 0.0
    lo, hi = m - half, m + half
    if log:
        m, lo, hi = math.exp(m), math.exp(lo), math.exp(hi)
    return Interval(tuple(float(x) for x in v), m, lo, hi, log)


@dataclass(frozen=True)
class Criterion:
    """One part of a claim: ``statistic`` compared with ``bar``, fixed before any run.

    ``direction=">="``: the claim says the statistic is at least ``bar`` (holds if the interval's
    low end is >= bar, does not hold if its high end is < bar); ``"<="``: at most ``bar``.
    ``precondition=True``: a check that the setup can show the effect (see module docstring).
    """

    part: str               # short label, e.g. "(a) speed-up to the target"
    statistic: str          # name of a statistic returned by Experiment.statistics
    bar: float
    direction: str = ">="
    log: bool = False       # judge a ratio on the log scale (interval of the geometric mean)
    precondition: bool = False

    def __post_init__(self) -> None:
        if self.direction not in (">=", "<="):
            raise ValueError(f"direction: expected '>=' or '<=', got {self.direction!r}")

    def judge(self, iv: Interval) -> str:
        lo, hi = iv.lo, iv.hi
        if math.isnan(lo) or math.isnan(hi):
            return "inconclusive"
        if self.direction == ">=":
            return "holds" if lo >= self.bar else "does not hold" if hi < self.bar else \
                "inconclusive"
        return "holds" if hi <= self.bar else "does not hold" if lo > self.bar else "inconclusive"

    def rule(self) -> str:
        kind = "precondition" if self.precondition else "claim"
        return f"{self.part} [{kind}]: {self.statistic} {self.direction} {self.bar:g}"


@dataclass(frozen=True)
class Judged:
    criterion: Criterion
    interval: Interval
    verdict: str

    def text(self) -> str:
        c = self.criterion
        return f"{c.part}: {self.interval.text()} vs {c.direction} {c.bar:g} -> {self.verdict}"

    def to_json(self) -> dict:
        return {**asdict(self.criterion), "interval": self.interval.to_json(),
                "verdict": self.verdict}


COMBINATION_RULE = ("Each part: holds if the whole 95% interval clears its bar, does not hold if "
                    "the whole interval lies on the other side, otherwise inconclusive. The "
                    "claim holds if every part holds and does not hold if any part does not "
                    "hold; a precondition that is not met (the setup cannot show the effect) "
                    "makes the claim inconclusive whatever the other parts say.")


def combine(parts: list[Judged]) -> str:
    """The one combination rule for multi-part claims (see :data:`COMBINATION_RULE`)."""
    if not parts:
        raise ValueError("parts: expected at least one judged criterion, got none")
    if any(p.criterion.precondition and p.verdict != "holds" for p in parts):
        return "inconclusive"
    verdicts = [p.verdict for p in parts if not p.criterion.precondition]
    if not verdicts:
        raise ValueError("parts: expected at least one criterion that is not a precondition")
    if all(v == "holds" for v in verdicts):
        return "holds"
    return "does not hold" if "does not hold" in verdicts else "inconclusive"


@dataclass(frozen=True)
class Published:
    """What a source reports, set beside what we measure.

    ``value`` is the source's number (or words, for a qualitative claim); ``ours`` names the
    statistic of ours that corresponds (None when nothing does); ``setup`` is the source's own
    setting (data, model, steps), so a reader sees how far our scale is from it.
    """

    source: str
    where: str              # figure / table / section
    quantity: str
    value: str
    setup: str
    ours: str | None = None
    qualitative: bool = False

    def to_json(self) -> dict:
        return asdict(self)
