"""Reproduce the experiments: the settings (:mod:`.options`), every (experiment, run, seed)
unit planned and run resumably (:mod:`.units`), in worker processes (:mod:`.pool`), then
``results.json``, ``metrics.csv`` and the report (:mod:`.suite`)."""

from .options import DEFAULT_SEEDS, Options, UsageError, resolve_scale, resolve_size
from .suite import finalize, run_all

__all__ = ["DEFAULT_SEEDS", "Options", "UsageError", "finalize", "resolve_scale", "resolve_size",
           "run_all"]
