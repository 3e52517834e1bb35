"""``normlab.torch.fold_export``, the import path of :func:`fold_bn_export` (now in
:mod:`normlab.torch.fold.export`)."""

from .fold.export import ExportFoldResult, fold_bn_export, fold_bn_graph

__all__ = ["ExportFoldResult", "fold_bn_export", "fold_bn_graph"]
