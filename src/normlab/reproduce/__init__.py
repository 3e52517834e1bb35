"""Reproduce the experiments: every (experiment, run, seed) unit, resumable, in worker
processes (:mod:`.pool`), then ``results.json``, ``metrics.csv`` and the report
(:mod:`.suite`)."""

from .suite import (
    DEFAULT_SEEDS,
    Options,
    UsageError,
    finalize,
    resolve_scale,
    resolve_size,
    run_all,
)

__all__ = ["DEFAULT_SEEDS", "Options", "UsageError", "finalize", "resolve_scale", "resolve_size",
           "run_all"]
