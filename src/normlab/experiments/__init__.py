"""Reproductions of published BN claims: one file per experiment, listed in :mod:`.registry`.

The API they implement is :mod:`normlab.runner.base`."""

from ..runner.base import Experiment, Run, RunContext, Summary
from .registry import EXPERIMENTS, get

__all__ = ["EXPERIMENTS", "Experiment", "Run", "RunContext", "Summary", "get"]
