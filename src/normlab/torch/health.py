"""``bn_health``: a per-layer check-up of the batch norms of a torch model.

Forward hooks record, for each BN over a few batches, what its statistics are made of and how
far the running statistics are from what the data give. The checks follow the usual BN
pitfalls: too few values per channel for reliable batch statistics (Wu & He 2018, sec. 1),
running statistics stale against the data (Ioffe & Szegedy 2015, Alg. 2; the train/eval gap),
dead channels (zero variance: normalising amplifies noise by 1/sqrt(eps)), a BN left in train
mode at inference, and a bias before BN, which the mean subtraction cancels (sec. 3.2).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .._checks import check_positive_int
from .frozen import FrozenBatchNorm2d
from .recalibrate import batch_input

GAP_WARN = 0.5          # |batch mean - running mean| / running std worth a look
DEAD_VAR = 1e-8         # batch variance below this: a dead channel
FEW_VALUES = 16         # values per channel below this make batch statistics noisy


@dataclass
class LayerHealth:
    name: str
    kind: str
    num_features: int
    values_per_channel: int = 0
    mean_gap: float = 0.0         # max over channels of |batch mean - running mean| / sqrt(rv)
    var_ratio: float = 1.0        # median over channels of batch var / running var
    dead_channels: list[int] = field(default_factory=list)
    train_mode_at_eval: bool = False
    redundant_bias_from: str | None = None
    suggestions: list[str] = field(default_factory=list)


@dataclass
class BNHealthReport:
    layers: list[LayerHealth]
    batches: int

    def to_dict(self) -> dict:
        return {"batches": self.batches, "layers": {x.name: asdict(x) for x in self.layers}}

    def table(self):
        from rich.table import Table

        t = Table(title=f"BN health ({self.batches} batches)")
        for col in ("layer", "kind", "C", "values/ch", "mean gap", "var ratio", "dead",
                    "suggestions"):
            t.add_column(col)
        for x in self.layers:
            t.add_row(x.name, x.kind, str(x.num_features), str(x.values_per_channel),
                      f"{x.mean_gap:.3g}", f"{x.var_ratio:.3g}", str(len(x.dead_channels)),
                      "; ".join(x.suggestions) or "ok")
        return t

    def __rich__(self):
        return self.table()


def _is_bn(m: nn.Module) -> bool:
    return isinstance(m, (_BatchNorm, FrozenBatchNorm2d))


def _running(m: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    rm, rv = getattr(m, "running_mean", None), getattr(m, "running_var", None)
    if rm is None or rv is None or rm.dim() != 1:
        return None
    return rm.detach().double(), rv.detach().double()


@torch.no_grad()
def bn_health(model: nn.Module, loader: Iterable, num_batches: int = 4) -> BNHealthReport:
    """Run up to ``num_batches`` batches through ``model`` (no grad; running statistics and
    mode are restored afterwards, so the check has no side effects) and report per BN layer."""
    num_batches = check_positive_int("num_batches", num_batches)
    names = {m: n for n, m in model.named_modules()}
    bns = [m for m in model.modules() if _is_bn(m)]
    state = {m: {k: v.clone() for k, v in m.state_dict().items()} for m in bns}
    order: list[nn.Module] = []
    stats: dict[nn.Module, list] = {m: [] for m in bns}
    previous: dict[nn.Module, nn.Module | None] = {}

    def record(m, inputs, _output):
        if _is_bn(m) and m not in previous:
            previous[m] = order[-1] if order else None
        if _is_bn(m):
            x = inputs[0].detach().double()
            dims = [0, *range(2, x.dim())] if x.dim() > 1 else [0]
            var, mean = torch.var_mean(x, dim=dims, correction=0)
            stats[m].append((x.numel() // max(x.shape[1], 1), mean, var))
        if not list(m.children()):
            order.append(m)

    hooks = [m.register_forward_hook(record) for m in model.modules()]
    used = 0
    try:
        for batch in loader:
            if used >= num_batches:
                break
            model(batch_input(batch))
            used += 1
            order.clear()
    finally:
        for h in hooks:
            h.remove()
        for m, sd in state.items():
            m.load_state_dict(sd)
    layers = [_diagnose(m, names[m], stats[m], previous.get(m), names, model.training)
              for m in bns]
    return BNHealthReport(layers, used)


def _diagnose(m, name, seen, prev, names, model_training) -> LayerHealth:
    h = LayerHealth(name or "model", type(m).__name__, m.num_features)
    h.train_mode_at_eval = m.training and not model_training and not isinstance(
        m, FrozenBatchNorm2d)
    if isinstance(prev, (nn.Linear, nn.modules.conv._ConvNd)) and prev.bias is not None:
        h.redundant_bias_from = names.get(prev, "?")
    if seen:
        h.values_per_channel = min(n for n, _, _ in seen)
        mean = torch.stack([s[1] for s in seen]).mean(0)
        var = torch.stack([s[2] for s in seen]).mean(0)
        h.dead_channels = torch.nonzero(var < DEAD_VAR).flatten().tolist()
        run = _running(m)
        if run is not None:
            rm, rv = run
            eps = getattr(m, "eps", 1e-5)
            h.mean_gap = float(((mean - rm).abs() / (rv + eps).sqrt()).max())
            h.var_ratio = float((var / (rv + eps)).median())
    if h.values_per_channel and h.values_per_channel < FEW_VALUES:
        h.suggestions.append(f"only {h.values_per_channel} values per channel: noisy batch "
                             "statistics; use a larger batch, GhostBN, GroupNorm or BatchRenorm")
    if h.mean_gap > GAP_WARN or not 0.5 < h.var_ratio < 2.0:
        h.suggestions.append("running statistics do not match the data: recalibrate_bn()")
    if h.dead_channels:
        h.suggestions.append(f"{len(h.dead_channels)} dead channel(s) with zero variance: "
                             "check the preceding layer (dead ReLUs, init, learning rate)")
    if h.train_mode_at_eval:
        h.suggestions.append("left in train mode while the model is in eval: call .eval()")
    if h.redundant_bias_from:
        h.suggestions.append(f"bias of {h.redundant_bias_from} is cancelled by BN: bias=False")
    return h
