"""What a fold did: which BatchNorms were merged where, and which were not and why.

Both engines return one of these beside the folded model, so nothing is skipped silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FoldReport:
    """``folded``: (bn name, what it became); ``skipped``: (bn name, why it was not folded)."""

    folded: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def add_folded(self, bn: str, into: str) -> None:
        self.folded.append((bn, into))

    def add_skipped(self, bn: str, reason: str) -> None:
        self.skipped.append((bn, reason))

    def lines(self) -> list[str]:
        out = [f"folded {bn or '<root>'} -> {into}" for bn, into in self.folded]
        out += [f"not folded {bn or '<root>'}: {why}" for bn, why in self.skipped]
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines()) or "no BatchNorm layers found"


def require_eval_mode(model) -> None:
    """Refuse a model (either engine) with any module in training mode: there BN normalises
    with batch statistics, which no fixed weights reproduce."""
    training = [name or "<root>" for name, m in model.named_modules() if m.training]
    if training:
        more = f" (and {len(training) - 5} more)" if len(training) > 5 else ""
        raise ValueError("model: expected an eval-mode model (call model.eval() first), got "
                         f"modules in training mode: {', '.join(training[:5])}{more}")
