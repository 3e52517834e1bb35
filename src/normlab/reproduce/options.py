"""A reproduction's settings (:class:`Options`), built once by the CLI from its flags, and the
checks that turn flags into them (one-line :class:`UsageError`, exit code 2)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..runner.base import SIZES

CI_SCALE_ENV = "NORMLAB_CI_SCALE"
DEFAULT_SEEDS = {"quick": 3, "full": 5, "paper": 5}


class UsageError(ValueError):
    """Bad command-line input: the CLI prints it on one line and exits with code 2."""


@dataclass(frozen=True, kw_only=True)
class Options:
    """One reproduction's settings: experiments ``names`` at ``size`` (quick | full | paper)
    on ``data_spec`` with ``engine``, seeds ``seed`` .. ``seed + seeds - 1``, written to
    ``out``. ``steps_scale`` multiplies every step count (CI); ``device``, ``workers`` and
    ``sync_bn`` are the torch engine's (README, "Scaling out")."""

    names: list[str]
    size: str = "full"
    data_spec: str
    engine: str
    out: Path | None
    seed: int
    seeds: int = 1
    steps_scale: float = 1.0
    jobs: int = 1
    device: str | None = None     # torch engine only (None: CPU, torch's defaults)
    workers: int = 1              # torch engine: DDP processes per run
    sync_bn: bool = False

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise UsageError(f"size: expected one of {', '.join(SIZES)}, got {self.size!r}")

    @property
    def scale_out(self) -> dict:
        """The torch-engine options that change results, in every unit's identity."""
        return ({"device": self.device, "workers": self.workers, "sync_bn": self.sync_bn}
                if self.engine == "torch" else {})

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seed, self.seed + self.seeds))


def resolve_size(quick: bool, size: str | None) -> str:
    """The size of the flags: ``--size``, or "quick" / "full" from ``--quick`` (an alias of
    ``--size quick``). Raises :class:`UsageError` naming the flag for an unknown size or a
    ``--size`` that contradicts ``--quick``."""
    if size is not None and size not in SIZES:
        raise UsageError(f"--size: expected one of {', '.join(SIZES)}, got {size!r}")
    if quick and size not in (None, "quick"):
        raise UsageError(f"--size: expected quick or none with --quick (an alias of size "
                         f"quick), got {size!r}")
    return size or ("quick" if quick else "full")


def resolve_scale(steps_scale: float | None) -> float:
    """The extra step multiplier: ``--steps-scale`` or ``NORMLAB_CI_SCALE`` (CI sizes)."""
    if steps_scale is None:
        raw = os.environ.get(CI_SCALE_ENV, "").strip()
        try:
            steps_scale = float(raw) if raw else 1.0
        except ValueError:
            raise UsageError(f"{CI_SCALE_ENV}: expected a number in (0, 1], got {raw!r}") from None
    if not 0 < steps_scale <= 1:
        raise UsageError(f"--steps-scale: expected a number in (0, 1], got {steps_scale}")
    return steps_scale
