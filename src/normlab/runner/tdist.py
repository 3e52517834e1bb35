"""Student's t distribution: tail probability and quantile at any (also fractional) degrees of
freedom, for the Welch-Satterthwaite intervals and the Holm p-values of :mod:`.evidence`.

The upper tail is P(T > t) = I_x(df/2, 1/2) / 2 with x = df / (df + t^2) (Abramowitz & Stegun
26.7.1 with 26.5.27), the regularized incomplete beta evaluated by its continued fraction
(A&S 26.5.8) with the modified Lentz method. df = inf is the normal distribution. scipy is not
a dependency of normlab; tests/runner/test_evidence.py checks these against the printed t table.
"""

from __future__ import annotations

import math

_EPS, _TINY, _MAX_ITER = 1e-14, 1e-300, 500
NORMAL_DF = 1e7    # above this many degrees of freedom, the normal distribution


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of I_x(a, b) (A&S 26.5.8), modified Lentz."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _MAX_ITER):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + num / c
            c = c if abs(c) > _TINY else _TINY
            h *= d * c
        if abs(d * c - 1.0) < _EPS:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x: expected a number in [0, 1], got {x}")
    if x in (0.0, 1.0):
        return x
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom (inf: the normal)."""
    if not df > 0:
        raise ValueError(f"df: expected > 0 degrees of freedom, got {df}")
    if math.isnan(t):
        return math.nan
    if df > NORMAL_DF:     # the continued fraction loses precision; t is normal to 1e-7 here
        return 0.5 * math.erfc(t / math.sqrt(2.0))
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def t_ppf(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t (bisection on :func:`t_sf`, to ~1e-10)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"q: expected a probability in (0, 1), got {q}")
    if q < 0.5:
        return -t_ppf(1.0 - q, df)
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > 1.0 - q:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_sf(mid, df) > 1.0 - q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-10 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)
