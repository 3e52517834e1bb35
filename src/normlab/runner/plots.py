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


def bars(ax, values, colors, labels) -> None:
    """Bars at the mean over seeds of ``values`` (seeds x bars), whiskers from min to max."""
    v = np.asarray(values, dtype=np.float64)
    mean = v.mean(axis=0)
    # clip: the mean of equal values can sit one rounding step outside them
    low, high = np.maximum(mean - v.min(axis=0), 0), np.maximum(v.max(axis=0) - mean, 0)
    ax.bar(range(v.shape[1]), mean, color=colors, yerr=[low, high] if len(v) > 1 else None)
    ax.set_xticks(range(v.shape[1]), labels, fontsize="small")


def seeds_of(by_seed: dict, key: str, field: str) -> list:
    """``field`` of run ``key`` at every seed (in seed order)."""
    return [by_seed[s][key][field] for s in sorted(by_seed)]
