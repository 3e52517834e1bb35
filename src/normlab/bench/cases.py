"""The shapes ``normlab bench`` times and the passes (modes) it times them in."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.families import FAMILIES

TRAIN_BYTES, EVAL_BYTES = 5, 2   # multiples of the input size: the byte model of .suite
# (mode, closure it times, bytes per input byte, label, timing method)
MODES = (("train", "train", TRAIN_BYTES, "fwd+bwd", "interleaved"),
         ("eval", "eval", EVAL_BYTES, "fwd", "interleaved"),
         ("loop", "train", TRAIN_BYTES, "fwd+bwd loop", "back to back"))
LABELS = {mode: label for mode, _, _, label, _ in MODES}


@dataclass(frozen=True)
class Case:
    name: str
    family: str                    # a key of normlab.core.families.FAMILIES
    shape: tuple[int, ...]
    channels_last: bool = False
    note: str = ""


# every family's declared bench shapes, in declaration order (normlab.core.families)
FULL_CASES = tuple(Case(c.label, f.name, c.shape, c.channels_last, c.note)
                   for f in FAMILIES.values() for c in f.bench)
TINY_CASES = tuple(Case(c.label, f.name, c.tiny, c.channels_last)
                   for f in FAMILIES.values() for c in f.bench if c.tiny)


def make_input(case: Case, rng: np.random.Generator) -> np.ndarray:
    if case.channels_last:
        n, c, *sp = case.shape
        return rng.standard_normal((n, *sp, c), dtype=np.float32).transpose(0, 3, 1, 2)
    return rng.standard_normal(case.shape, dtype=np.float32)
