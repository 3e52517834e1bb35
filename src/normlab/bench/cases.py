"""The shapes ``normlab bench`` times and the passes (modes) it times them in."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TRAIN_BYTES, EVAL_BYTES = 5, 2   # multiples of the input size: the byte model of .suite
# (mode, closure it times, bytes per input byte, label, timing method)
MODES = (("train", "train", TRAIN_BYTES, "fwd+bwd", "interleaved"),
         ("eval", "eval", EVAL_BYTES, "fwd", "interleaved"),
         ("loop", "train", TRAIN_BYTES, "fwd+bwd loop", "back to back"))
LABELS = {mode: label for mode, _, _, label, _ in MODES}


@dataclass(frozen=True)
class Case:
    name: str
    family: str                    # "batch", "layer" or "group"
    shape: tuple[int, ...]
    channels_last: bool = False
    note: str = ""


FULL_CASES = (
    Case("BN1d", "batch", (256, 1024)),
    Case("BN1d", "batch", (60, 100)),
    Case("BN2d", "batch", (32, 64, 56, 56)),
    Case("BN2d", "batch", (8, 256, 28, 28)),
    Case("BN2d NHWC", "batch", (32, 64, 56, 56), channels_last=True,
         note="(N,C,H,W) view of a contiguous (32,56,56,64) array"),
    Case("LayerNorm", "layer", (16, 512, 768),
         note="shrunk from (64,512,768) to 16 sequences: 4 arrays of 400 MB would not fit "
              "beside the other jobs on this machine"),
    Case("GroupNorm(32)", "group", (16, 256, 28, 28)),
)
TINY_CASES = (
    Case("BN1d", "batch", (16, 8)),
    Case("BN2d", "batch", (4, 3, 5, 5)),
    Case("BN2d NHWC", "batch", (4, 3, 5, 5), channels_last=True),
    Case("LayerNorm", "layer", (2, 4, 8)),
    Case("GroupNorm(32)", "group", (2, 32, 2, 2)),
)


def make_input(case: Case, rng: np.random.Generator) -> np.ndarray:
    if case.channels_last:
        n, c, *sp = case.shape
        return rng.standard_normal((n, *sp, c), dtype=np.float32).transpose(0, 3, 1, 2)
    return rng.standard_normal(case.shape, dtype=np.float32)
