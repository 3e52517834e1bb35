"""``bn_health``: a per-layer check-up of the batch norms of a torch model.

Forward hooks record, for each BN over a few batches, what its statistics are made of and how
far the running statistics are from what the data give. The checks follow the usual BN
pitfalls: too few values per channel for reliable batch statistics (Wu & He 2018, sec. 1),
running statistics stale against the data (Ioffe & Szegedy 2015, Alg. 2; the train/eval gap),
judged channel by channel so that one bad channel is not averaged away, running statistics that
are NaN/inf or a running_var of 0 (eval divides by sqrt(eps): a 316x amplification at eps=1e-5),
dead channels (zero variance: normalising amplifies noise by 1/sqrt(eps)), a model or a BN left
in train mode (BN then normalises with batch statistics and rewrites its running statistics on
every forward), and a bias before BN, which the mean subtraction cancels (sec. 3.2).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .._checks import check_positive_int
from ._norms import has_bn_buffers
from .frozen import _FrozenInPlace
from .recalibrate import batch_input

GAP_WARN = 0.5          # |batch mean - running mean| / running std worth a look
VAR_WARN = 2.0          # batch var / running var beyond [1/2, 2] worth a look
NOISE_SDS = 4.0         # ... plus this many standard errors of the estimate from n values
DEAD_VAR = 1e-8         # batch variance below this: a dead channel
FEW_VALUES = 16         # values per channel below this make batch statistics noisy


@dataclass
class LayerHealth:
    name: str
    kind: str
    num_features: int
    values_per_channel: int = 0
    mean_gap: float = 0.0         # max over channels of |batch mean - running mean| / sqrt(rv)
    var_ratio: float = 1.0        # (batch var + eps) / (running var + eps) farthest from 1
    stale_channels: list[int] = field(default_factory=list)
    dead_channels: list[int] = field(default_factory=list)
    nonfinite_channels: list[int] = field(default_factory=list)   # NaN/inf running statistics
    zero_var_channels: list[int] = field(default_factory=list)    # running_var <= 0
    train_mode: bool = False            # normalises with batch statistics in this check
    train_mode_at_eval: bool = False    # ... while the rest of the model is in eval mode
    redundant_bias_from: str | None = None
    suggestions: list[str] = field(default_factory=list)


@dataclass
class BNHealthReport:
    """What :func:`bn_health` found: one :class:`LayerHealth` per BN (its statistics against the
    data, and suggestions), the number of batches run, and whether the model was in train mode."""

    layers: list[LayerHealth]
    batches: int
    model_in_train_mode: bool = False

    def to_dict(self) -> dict:
        """The report as plain data (JSON-ready): batches, mode, and each layer's fields."""
        return {"batches": self.batches, "model_in_train_mode": self.model_in_train_mode,
                "layers": {x.name: asdict(x) for x in self.layers}}

    def table(self):
        """The report as a ``rich`` table: one row per BN, with its suggestions."""
        from rich.table import Table

        title = f"BN health ({self.batches} batches)"
        if self.model_in_train_mode:
            title += " -- the model is in train mode: call model.eval() for inference"
        t = Table(title=title)
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
    """Batch norms of every kind: torch's and subclasses, frozen ones (normlab's,
    torchvision's, timm's FrozenBatchNormAct2d)."""
    return isinstance(m, _BatchNorm) or has_bn_buffers(m)


def _running(m: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    rm, rv = getattr(m, "running_mean", None), getattr(m, "running_var", None)
    if rm is None or rv is None or rm.dim() != 1:
        return None
    return rm.detach().double(), rv.detach().double()


def _own_tensors(m: nn.Module) -> list[torch.Tensor]:
    return [t for t in (*m.parameters(recurse=False), *m.buffers(recurse=False))
            if t is not None]


@torch.no_grad()
def bn_health(model: nn.Module, loader: Iterable, num_batches: int = 4) -> BNHealthReport:
    """Run up to ``num_batches`` batches through ``model`` (no grad; running statistics and
    mode are restored afterwards, so the check has no side effects) and report per BN layer."""
    num_batches = check_positive_int("num_batches", num_batches)
    names = {m: n for n, m in model.named_modules()}
    bns = [m for m in model.modules() if _is_bn(m)]
    saved = {m: [t.clone() for t in _own_tensors(m)] for m in bns}
    order: list[nn.Module] = []
    stats: dict[nn.Module, list] = {m: [] for m in bns}
    previous: dict[nn.Module, nn.Module | None] = {}

    def before(m, _inputs):   # the leaf that ran last feeds this BN
        previous.setdefault(m, order[-1] if order else None)

    def record(m, inputs, _output):
        if _is_bn(m):
            x = inputs[0].detach().double()
            dims = [0, *range(2, x.dim())] if x.dim() > 1 else [0]
            var, mean = torch.var_mean(x, dim=dims, correction=0)
            stats[m].append((x.numel() // max(x.shape[1], 1), mean, var))
        if not list(m.children()):
            order.append(m)

    hooks = [m.register_forward_hook(record) for m in model.modules()]
    hooks += [m.register_forward_pre_hook(before) for m in bns]
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
        for m, tensors in saved.items():   # a copy, not load_state_dict: nothing to re-check
            for t, old in zip(_own_tensors(m), tensors, strict=True):
                t.copy_(old)
    layers = [_diagnose(m, names[m], stats[m], previous.get(m), names, model.training)
              for m in bns]
    return BNHealthReport(layers, used, model.training)


def _batch_stat_mode(m: nn.Module) -> bool:
    """Whether ``m`` normalised with batch statistics in the check (a BN in train mode that no
    freezing keeps on its running statistics)."""
    return isinstance(m, _BatchNorm) and m.training and not isinstance(m, _FrozenInPlace) \
        and not getattr(m, "frozen", False)


def _diagnose(m, name, seen, prev, names, model_training) -> LayerHealth:
    run = _running(m)
    h = LayerHealth(name or "model", type(m).__name__,
                    int(run[0].shape[0]) if run is not None else int(m.num_features))
    h.train_mode = _batch_stat_mode(m)
    h.train_mode_at_eval = h.train_mode and not model_training
    if isinstance(prev, (nn.Linear, nn.modules.conv._ConvNd)) and prev.bias is not None:
        h.redundant_bias_from = names.get(prev, "?")
    if run is not None:
        rm, rv = run
        h.nonfinite_channels = _where(~(torch.isfinite(rm) & torch.isfinite(rv)))
        h.zero_var_channels = _where(torch.isfinite(rv) & (rv <= 0))
    if seen:
        h.values_per_channel = min(n for n, _, _ in seen)
        mean = torch.stack([s[1] for s in seen]).mean(0)
        var = torch.stack([s[2] for s in seen]).mean(0)
        h.dead_channels = _where(var < DEAD_VAR)
        if run is not None:
            _compare(h, mean, var, *run, getattr(m, "eps", 1e-5), sum(n for n, _, _ in seen))
    _suggest(h, model_training, getattr(m, "eps", 1e-5))
    return h


def _where(mask: torch.Tensor) -> list[int]:
    return torch.nonzero(mask).flatten().tolist()


def _compare(h: LayerHealth, mean, var, rm, rv, eps: float, n: int) -> None:
    """Channel by channel: is the data's mean/variance what the running statistics say?
    Limits widen by NOISE_SDS standard errors of an estimate from n values (a mean's is
    1/sqrt(n) standard deviations, a variance's sqrt(2/(n-1)) of itself)."""
    ok = torch.isfinite(rm) & torch.isfinite(rv) & (rv > 0) & (var >= DEAD_VAR)
    if not bool(ok.any()):
        return
    gap = (mean - rm).abs() / (rv + eps).sqrt()
    # eval output variance / training output variance: (var + eps) / (rv + eps); a channel
    # whose variances are both far below eps is normalised alike in both modes
    log_ratio = ((var + eps) / (rv + eps)).log()
    gap_limit = GAP_WARN + NOISE_SDS / math.sqrt(n)
    log_limit = math.log(VAR_WARN) + NOISE_SDS * math.sqrt(2.0 / max(n - 1, 1))
    h.stale_channels = _where(ok & ((gap > gap_limit) | (log_ratio.abs() > log_limit)))
    h.mean_gap = float(gap[ok].max())
    worst = log_ratio.abs().masked_fill(~ok, -1.0).argmax()
    h.var_ratio = float(log_ratio[worst].exp())


def _listed(channels: list[int]) -> str:
    head = ", ".join(map(str, channels[:8]))
    return f"[{head}{', ...' if len(channels) > 8 else ''}] ({len(channels)} of them)" \
        if len(channels) > 8 else f"[{head}]"


def _suggest(h: LayerHealth, model_training: bool, eps: float) -> None:
    say = h.suggestions.append
    if h.values_per_channel and h.values_per_channel < FEW_VALUES:
        say(f"only {h.values_per_channel} values per channel: noisy batch statistics; use a "
            "larger batch, GhostBN, GroupNorm or BatchRenorm")
    if h.nonfinite_channels:
        say(f"running statistics are NaN/inf at channel(s) {_listed(h.nonfinite_channels)}: "
            "every eval output there is NaN/inf; recalibrate_bn() or fix the checkpoint")
    if h.zero_var_channels:
        say(f"running_var <= 0 at channel(s) {_listed(h.zero_var_channels)}: eval divides by "
            f"sqrt(eps) there ({1 / math.sqrt(eps):.0f}x amplification, NaN if negative); "
            "recalibrate_bn()")
    if h.stale_channels:
        say(f"running statistics do not match the data at channel(s) "
            f"{_listed(h.stale_channels)} (worst mean gap {h.mean_gap:.3g} running stds, var "
            f"ratio {h.var_ratio:.3g}): recalibrate_bn()")
    if h.dead_channels:
        say(f"{len(h.dead_channels)} dead channel(s) {_listed(h.dead_channels)} with zero "
            "variance: check the preceding layer (dead ReLUs, init, learning rate)")
    if h.train_mode and model_training:
        say("the model is in train mode: BN normalises with batch statistics and rewrites its "
            "running statistics on every forward; call model.eval() for inference")
    elif h.train_mode:
        say("left in train mode while the model is in eval: call .eval()")
    if h.redundant_bias_from:
        say(f"bias of {h.redundant_bias_from} is cancelled by BN: bias=False")
