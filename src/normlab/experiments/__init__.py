"""Reproductions of published BN claims; see :mod:`.base` for the API and :mod:`.registry`."""

from .base import Experiment, Run, RunContext, Summary
from .registry import EXPERIMENTS, get

__all__ = ["EXPERIMENTS", "Experiment", "Run", "RunContext", "Summary", "get"]
