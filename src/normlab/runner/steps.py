"""An experiment's step counts, each stated once (:class:`Steps`): the full-size count, the
paper-size count where the source's setting differs, and the floor that quick and CI sizes
never go below (README, "Sizes")."""

from __future__ import annotations

from dataclasses import dataclass

from .base import SIZES, scaled


@dataclass(frozen=True)
class Steps:
    """A count of steps (or epochs, batches, repeats) at each size: ``full``, ``paper``
    (default: ``full``), and at quick and CI sizes ``full`` times the run's scale, never below
    ``minimum`` (:func:`~.base.scaled`)."""

    full: int
    minimum: int = 1
    paper: int | None = None

    def at(self, scale: float, size: str = "full") -> int:
        """The count of a run at ``size`` whose step multiplier is ``scale``."""
        if size not in SIZES:
            raise ValueError(f"size: expected one of {', '.join(SIZES)}, got {size!r}")
        n = self.paper if size == "paper" and self.paper is not None else self.full
        return scaled(n, scale, self.minimum)
