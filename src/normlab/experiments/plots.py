"""Figures over seeds: the mean curve as a line, the spread over seeds as a band."""

from __future__ import annotations

import warnings

import numpy as np

BAND_NOTE = "lines: mean over seeds; bands: min-max over seeds"


def band(ax, x, curves, style: str = "-", label: str | None = None, color=None, **kw):
    """Plot the mean of ``curves`` (one list per seed, all on the steps ``x``) and shade the
    min-max range over seeds; ``None`` (an undefined point) is skipped."""
    arr = np.asarray([[np.nan if v is None else v for v in c] for c in curves], dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # an all-NaN column: a diverged point
        mean = np.nanmean(arr, axis=0)
        lo, hi = np.nanmin(arr, axis=0), np.nanmax(arr, axis=0)
    (line,) = ax.plot(x, mean, style, label=label, color=color, **kw)
    if len(arr) > 1:
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.18, lw=0)
    return line


def seeds_of(by_seed: dict, key: str, field: str) -> list:
    """``field`` of run ``key`` at every seed (in seed order)."""
    return [by_seed[s][key][field] for s in sorted(by_seed)]
