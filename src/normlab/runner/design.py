"""Which seeds decided an experiment's design and which report it: pilot seeds, design changes,
and the confirmatory block.

A design (network, steps, rates, targets, bars) is chosen on *pilot* seeds. Every change made
after seeing a result is recorded (:class:`DesignChange`: what, when, why). The reported verdicts
come from a *confirmatory* block of seeds that no pilot or design decision has used
(:data:`CONFIRMATORY_SEEDS`, the default of ``normlab reproduce``); any later design change needs
a new confirmatory block (:data:`CONFIRMATORY_RULE`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

CONFIRMATORY_SEEDS = tuple(range(1000, 1005))   # full size; quick size uses the first three
FIRST_CONFIRMATORY_SEED = CONFIRMATORY_SEEDS[0]
EXPLORATORY_SEEDS = tuple(range(0, 10))         # seen while designing: seeds 0-9 (issue 24)
CONFIRMATORY_RULE = (
    "The reported verdicts come from the confirmatory seeds 1000-1004 (quick size: 1000-1002), "
    "which no pilot or design decision used; seeds 0-9 and every pilot seed are exploratory. "
    "A design change after these runs (network, steps, rates, targets, bars, roles) requires a "
    "new confirmatory block of unused seeds, and the change is recorded here with what, when "
    "and why.")


@dataclass(frozen=True)
class DesignChange:
    """One design decision made after seeing a result: what changed, when, and why."""

    what: str
    when: str     # the commit or session and the data it saw
    why: str

    def to_json(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        return f"{self.what} ({self.when}): {self.why}"
