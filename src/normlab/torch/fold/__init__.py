"""Fold eval-mode BatchNorm into a neighbouring Linear / Conv / ConvTranspose of a torch model.

At inference BN is a fixed per-channel affine map (Ioffe & Szegedy 2015, Alg. 2, line 11), so
``conv -> bn`` is one convolution with scaled weights and a shifted bias; where no layer before
it can take it, it goes into the FOLLOWING Linear / unpadded conv (the rules, one set for every
folder: :mod:`normlab.fold.rules`). ``fold_bn`` returns a NEW module (the input is deep-copied,
never modified) and a :class:`~normlab.fold.FoldReport` listing every batch norm operation once:
folded (where into), or not folded (why), ending with ``folded X of Y``.

What counts as a batch norm (:mod:`normlab.torch._norms`):

* a plain BN layer (torch's and normlab's BatchNorm*d, SyncBatchNorm, ...) or a frozen one
  (normlab's / torchvision's FrozenBatchNorm2d): one fixed affine map, folded as a module;
* a BN SUBCLASS (timm's ``BatchNormAct2d``: normalisation, then drop-path and an activation in
  its own forward): torch.fx traces INTO its forward, so the ``batch_norm`` call is folded and
  what the subclass adds stays in the graph. One whose batch norm cannot fold is kept whole (a
  call of the module itself), so that it keeps its train/eval mode for ``train()``,
  ``recalibrate_bn`` and ``bn_health``. ``super().forward(x)`` inside such a forward is
  recorded as the ``F.batch_norm`` call torch's eval forward makes, and timm's frozen
  ``FrozenBatchNormAct2d`` as that call followed by its drop and act. A subclass whose forward
  cannot be traced is kept whole and reported: folding it could drop what it adds; so is any
  other module with BN statistics (its normalisation is not recognised);
* a ``batch_norm`` call on a weight (weight standardisation) is no batch norm: a note.

A module fx cannot trace because of some submodule is traced around that submodule; one it
cannot trace at all is left, with its BN children reported, and its other children folded.
Tracing leaves no state behind (a forward that caches a traced value would hand it to the next
trace); a graph that still reads another trace's value counts as untraceable.
A traced module in which nothing folded stays as it was. ``nn.Sequential`` is folded
structurally (Identity placeholders keep the state-dict keys) when its children are plain.
A Linear <-> BN fold is exact
only on (N, features) tensors (BatchNorm1d normalises dim 1, a Linear maps the last dim), which
only a shape can tell: unless the BN's class rules it out, the fold is made and the BN's place
is taken by :class:`FoldedLinearCheck`, which raises on any other rank instead of computing
something else (torch's ``fuse_linear_bn_eval`` assumes 2-D silently).

One module per mechanism: :mod:`.modules` (``fold_bn``: module trees and ``nn.Sequential``),
:mod:`.graph` (a torch.fx graph's batch norm calls) over :mod:`.trace` (how it is traced),
:mod:`.export` (``fold_bn_export``: torch.export programs), :mod:`.count` (``count_bn_ops``),
:mod:`.script` (``fold_bn_script``: TorchScript); :mod:`.common` holds what they share.
"""

from .common import FoldedLinearCheck, torch_jit_types
from .count import count_bn_ops
from .export import ExportFoldResult, fold_bn_export, fold_bn_graph
from .modules import fold_bn
from .script import fold_bn_script

__all__ = ["ExportFoldResult", "FoldedLinearCheck", "count_bn_ops", "fold_bn", "fold_bn_export",
           "fold_bn_graph", "fold_bn_script", "torch_jit_types"]
