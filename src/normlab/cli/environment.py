"""The ``NORMLAB_*`` settings every command checks before it starts work: a bad value is a
one-line error at once, not a traceback (or a misleading message) mid-run."""

from __future__ import annotations


def check_environment() -> None:
    """Raise ``ValueError`` naming the variable for a bad ``NORMLAB_KERNELS`` or
    ``NORMLAB_OUTPUT_POOL`` (what the kernels read at every call)."""
    from ..kernels import backend
    from ..kernels.outputs import pool_budget

    backend()
    pool_budget()
