"""What a fold did: which BatchNorms were merged where, and which were not and why.

Both engines return one of these beside the folded model, so nothing is skipped silently. Each
entry of ``folded`` and ``skipped`` is one batch norm OPERATION (a call of a BN layer, or a
``batch_norm`` call in a layer's own forward, as timm's ``BatchNormAct2d`` makes): after the
fold, exactly the ``skipped`` ones still run. ``notes`` names batch-norm-like things that are no
such operation (a BN never called by the traced forward; a ``batch_norm`` call that standardises
a weight), so that every BN of the model is mentioned once and none is counted wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple


@dataclass
class FoldReport:
    """``folded``: (bn name, what it became); ``skipped``: (bn name, why it was not folded);
    ``notes``: (name, why it is not counted as a batch norm operation)."""

    folded: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)

    def add_folded(self, bn: str, into: str) -> None:
        """Record that batch norm ``bn`` was folded into ``into``."""
        self.folded.append((bn, into))

    def add_skipped(self, bn: str, reason: str) -> None:
        """Record that batch norm ``bn`` was left in place, and why."""
        self.skipped.append((bn, reason))

    def add_note(self, name: str, text: str) -> None:
        """Record why ``name`` is not counted as a batch norm operation."""
        self.notes.append((name, text))

    def names(self) -> set[str]:
        """Every name the report mentions."""
        return {name for entries in (self.folded, self.skipped, self.notes)
                for name, _ in entries}

    def summary(self) -> str:
        """``folded X of Y batch norm operations (Z still run)``: the last line of the report."""
        total = len(self.folded) + len(self.skipped)
        return f"folded {len(self.folded)} of {total} batch norm operations " \
               f"({len(self.skipped)} still run)"

    def lines(self) -> list[str]:
        """The report as lines: folded, not folded (with reasons), notes, then the summary."""
        out = [f"folded {bn or '<root>'} -> {into}" for bn, into in self.folded]
        out += [f"not folded {bn or '<root>'}: {why}" for bn, why in self.skipped]
        out += [f"not counted {name or '<root>'}: {text}" for name, text in self.notes]
        return out + [self.summary()]

    def __str__(self) -> str:
        return "\n".join(self.lines())


def require_eval_mode(model, mode_free=lambda m: False) -> None:
    """Refuse a model (either engine) with any module in training mode: there BN normalises
    with batch statistics, which no fixed weights reproduce. ``mode_free(m)``: ``m`` computes
    the same in both modes (a frozen BN, which e.g. timm's freeze_batch_norm_2d leaves in
    training mode), so its flag does not matter."""
    training = [name or "<root>" for name, m in model.named_modules()
                if m.training and not mode_free(m)]
    if training:
        more = f" (and {len(training) - 5} more)" if len(training) > 5 else ""
        raise ValueError("model: expected an eval-mode model (call model.eval() first), got "
                         f"modules in training mode: {', '.join(training[:5])}{more}")


class FoldResult(NamedTuple):
    """``model, report = fold_bn(m)``: the folded model (a normlab.nn or a torch.nn module, as
    given) and what the fold did."""

    model: Any
    report: FoldReport
