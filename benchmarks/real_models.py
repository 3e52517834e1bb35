"""fold_bn / freeze_bn / bn_health on real timm and torchvision architectures.

Not a test (CI cannot import timm): a survey to run where timm and torchvision import, e.g. in a
separate venv (``pip install torch torchvision timm`` and ``pip install -e . --no-deps``)::

    python benchmarks/real_models.py                   # the default list, a markdown table
    python benchmarks/real_models.py --models resnet18,tv:resnet18 --size 64

For each model (random weights, random but non-trivial BN statistics, eval mode, one
``--size`` x ``--size`` image; ``tv:`` names a torchvision model):

* BN ops before / after -- ``batch_norm`` calls with running statistics plus frozen-BN layer
  calls, counted while the model runs (``normlab.torch.fold.count_bn_ops``), for the original
  and for ``fold_bn``'s result; "report" is fold_bn's own "folded X of Y";
* fold err -- max |folded - original| over the output, max |original| for scale, and their
  ratio (random BN statistics make some outputs huge; float32 round-off is ~1e-7 of them);
* f32 floor -- max |original in float64 - original|: how far float32 rounding alone moves the
  output (``normlab.torch.rounding``); a fold err near it is rounding;
* f64 err -- the fold error of the model converted to float64 (the fold's own exactness);
* freeze err -- max |freeze_bn(model) - original| in eval mode;
* notes -- ``batch_norm`` calls on weights (weight standardisation), not counted as BNs;
* why not -- the commonest reason fold_bn gives for the BNs it left, with their number;
* health -- after ``recalibrate_bn`` on random images: how many BN layers ``bn_health`` flags,
  then whether it names a channel whose running_var was set to 0 and one whose running_mean
  was set to NaN (in the middle BN) -- "ok" when both are named.

Variants (suffix after ``+``): ``+sync`` runs ``normlab.torch.convert_sync_batchnorm`` first,
``+tvfrozen`` timm's ``freeze_batch_norm_2d`` (torchvision's FrozenBatchNorm2d for plain BNs,
timm's FrozenBatchNormAct2d for norm+act layers), then ``eval()``.
"""

from __future__ import annotations

import argparse
import copy
import re
import time
from collections import Counter

import torch

TIMM = ["resnet18", "resnet50", "efficientnet_b0", "tf_efficientnet_b0", "mobilenetv2_100",
        "mobilenetv3_small_100", "mobilenetv3_large_100", "regnety_002", "regnetx_002",
        "mnasnet_100", "densenet121", "dpn68", "inception_v3", "cspresnet50", "repvgg_a0",
        "darknet53", "ghostnet_100", "rexnet_100", "nf_resnet26", "seresnext26d_32x4d",
        "mixnet_s", "hrnet_w18_small", "vgg11_bn", "dla34", "levit_128s",
        # issue 27: efficientvit_m0 crashed fold_bn, resnetv2_18 and dpn48b lost BN modes
        "efficientvit_m0", "resnetv2_18", "dpn48b", "efficientnet_lite0", "mobilevit_xxs",
        "ese_vovnet19b_dw", "lcnet_050", "res2net50_14w_8s", "selecsls42b", "resnest14d",
        "mobileone_s0", "fastvit_t8", "repghostnet_050", "gernet_s"]
TORCHVISION = ["tv:resnet18", "tv:mobilenet_v3_small", "tv:shufflenet_v2_x0_5",
               "tv:densenet121", "tv:regnet_y_400mf"]
VARIANTS = ["resnet18+sync", "tv:resnet18+tvfrozen", "efficientnet_b0+tvfrozen"]
MIN_SIZE = {"inception_v3": 75, "levit_128s": 224}


def build(name: str) -> torch.nn.Module:
    base, _, variant = name.partition("+")
    if base.startswith("tv:"):
        import torchvision

        model = torchvision.models.get_model(base[3:], weights=None)
    else:
        import timm

        model = timm.create_model(base, pretrained=False)
    randomize_bn(model, torch.Generator().manual_seed(0))
    model.eval()
    if variant == "sync":
        from normlab.torch import convert_sync_batchnorm

        model = convert_sync_batchnorm(model)
    elif variant == "tvfrozen":
        from timm.layers import freeze_batch_norm_2d

        # its FrozenBatchNormAct2d come in training mode, and their drop-path follows it
        model = freeze_batch_norm_2d(model).eval()
    return model


@torch.no_grad()
def randomize_bn(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Running statistics and affine parameters that are not the identity."""
    for m in model.modules():
        rm = getattr(m, "running_mean", None)
        if not isinstance(rm, torch.Tensor) or rm.dim() != 1:
            continue
        c = rm.shape[0]
        m.running_mean.copy_(torch.randn(c, generator=gen) * 0.3)
        m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
        for attr, centre in (("weight", 1.0), ("bias", 0.0)):
            t = getattr(m, attr, None)
            if isinstance(t, torch.Tensor):
                t.copy_(centre + torch.randn(c, generator=gen) * 0.2)


def bn_layers(model) -> list[str]:
    return [n for n, m in model.named_modules()
            if isinstance(getattr(m, "running_var", None), torch.Tensor)
            and m.running_var.dim() == 1]


@torch.no_grad()
def survey(name: str, size: int) -> dict:
    import normlab.torch as nt
    from normlab.torch.fold import count_bn_ops
    from normlab.torch.rounding import rounding_floor

    t0 = time.perf_counter()
    torch.manual_seed(0)   # the same random weights on every run
    model = build(name)
    size = max(size, MIN_SIZE.get(name.partition("+")[0], 0))
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    want = model(x)
    row = {"model": name, "size": size, "ops before": count_bn_ops(model, x)}
    folded, report = nt.fold_bn(model)
    row["ops after"] = count_bn_ops(folded, x)
    row["report"] = f"{len(report.folded)}/{len(report.folded) + len(report.skipped)}"
    row["notes"] = len(report.notes)
    row["why not (commonest)"] = commonest_reason(report.skipped)
    row["fold err"] = (folded(x) - want).abs().max().item()
    row["max |out|"] = want.abs().max().item()
    row["rel err"] = row["fold err"] / max(row["max |out|"], 1e-30)
    row["f32 floor"] = rounding_floor(model, x, want)[0]
    row["f64 err"] = fold_error_f64(model, x)
    frozen = nt.freeze_bn(copy.deepcopy(model)).eval()
    row["freeze err"] = (frozen(x) - want).abs().max().item()
    row["health"] = health(model, size)
    row["seconds"] = time.perf_counter() - t0
    return row


@torch.no_grad()
def fold_error_f64(model, x) -> float | None:
    """max |fold_bn(model in float64) - model in float64| (None if it does not run so)."""
    import normlab.torch as nt

    try:
        wide = copy.deepcopy(model).double()
        return (nt.fold_bn(wide)[0](x.double()) - wide(x.double())).abs().max().item()
    except Exception:  # a model with float32 fixed inside: no float64 check
        return None


def commonest_reason(skipped: list[tuple[str, str]]) -> str:
    """The most frequent reason a BN was not folded, module names blanked, with its count."""
    if not skipped:
        return ""
    blank = Counter(re.sub(r"\b\w+(\.\w+)+\b|\b\d+\b", "X", why) for _, why in skipped)
    why, n = blank.most_common(1)[0]
    return f"{n}x: {why}".replace("|", "/")


def health(model, size: int) -> str:
    """bn_health after recalibration (flagged layers), then two injected faults."""
    import normlab.torch as nt

    model = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(2)
    data = [torch.randn(4, 3, size, size, generator=gen) for _ in range(2)]
    nt.recalibrate_bn(model, data)
    quiet = nt.bn_health(model, data)
    flagged = sum(bool(x.stale_channels or x.nonfinite_channels or x.zero_var_channels)
                  for x in quiet.layers)
    names = bn_layers(model)
    if not names:
        return f"{flagged}/0 (no BN layer)"
    target = dict(model.named_modules())[names[len(names) // 2]]
    with torch.no_grad():
        target.running_var[1] = 0.0
        target.running_mean[2] = float("nan")
    found = {x.name: x for x in nt.bn_health(model, data).layers}[names[len(names) // 2]]
    ok = found.zero_var_channels == [1] and found.nonfinite_channels == [2]
    return f"{flagged}/{len(quiet.layers)} flagged; faults {'ok' if ok else 'MISSED'}"


def markdown(rows: list[dict]) -> str:
    cols = ["model", "size", "ops before", "ops after", "report", "notes", "fold err",
            "max |out|", "rel err", "f32 floor", "f64 err", "freeze err", "health", "seconds",
            "why not (commonest)"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | not run: {r['error']} |" + " |" * (len(cols) - 2))
            continue
        cells = [f"{r[c]:.2g}" if isinstance(r[c], float) else str(r[c]) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(TIMM + TORCHVISION + VARIANTS))
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="also write the markdown table here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.models.split(","):
        try:
            rows.append(survey(name, args.size))
        except Exception as err:  # a model that does not build or run here: say so, go on
            rows.append({"model": name, "error": f"{type(err).__name__}: {err}"[:120]})
        print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    table = markdown(rows)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
