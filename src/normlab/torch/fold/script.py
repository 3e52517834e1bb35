"""``fold_bn_script``: the TorchScript entry, folded by ``torch.jit.freeze``."""

from __future__ import annotations

import torch

from ...fold.report import FoldReport, require_eval_mode
from .common import torch_jit_types


def fold_bn_script(model) -> tuple[object, FoldReport]:
    """Fold BatchNorm in a TorchScript module, which torch.fx cannot trace.

    ``torch.jit.freeze`` inlines the weights as constants and runs TorchScript's own
    conv->BN and linear->BN folding passes on a copy; the report counts the ``aten::batch_norm``
    nodes before and after, so a BN that stayed (e.g. one after an activation) is listed, not
    hidden. The input module is not modified.
    """
    if not isinstance(model, torch_jit_types()):
        raise TypeError(f"model: expected a TorchScript module, got {type(model).__name__}")
    require_eval_mode(model)

    def count(graph) -> int:
        return sum(1 for node in graph.nodes() if node.kind() == "aten::batch_norm")

    before = count(model.inlined_graph)
    frozen = torch.jit.freeze(model)
    after = count(frozen.graph)
    report = FoldReport()
    for i in range(before - after):
        report.add_folded(f"batch_norm #{i + 1}", "its preceding conv/linear (torch.jit.freeze)")
    for i in range(after):
        report.add_skipped(f"batch_norm #{before - after + i + 1}",
                           "TorchScript's freeze folds a BN only directly after a conv/linear")
    return frozen, report
