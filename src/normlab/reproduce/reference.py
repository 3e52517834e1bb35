"""The reference results shipped with normlab, and whether a run reproduces them (issue 29,
item 4).

A reference (``normlab/data/reference/*.json.gz``) is a trimmed results.json (:func:`trim`):
its configuration (size, data and its fingerprint, engine, seeds, step multiplier) and, per
experiment, the verdict, every criterion with its per-seed statistic and 95% interval, and every
run's metrics at every seed. Two are shipped: the quick size the demo runs (``normlab reproduce
--quick``: mnist5k, numpy engine, seeds 1000-1002) and the confirmatory full size (mnist5k,
numpy engine, seeds 1000-1004). ``tools/make_reference.py`` (``make reference``) rebuilds them.

:func:`compare` checks a run against the reference of the same configuration, experiment by
experiment (:data:`STATUSES`):

* **bit-identical**: every run's metrics at every seed are exactly the reference's (the
  canonical JSON of both is the same text);
* **within tolerance**: the metrics differ (another machine's floating point: the numba
  kernels let LLVM reorder sums, so the vector width changes the last bits, and training
  amplifies them), but every evidence part's statistic at every seed is within
  :data:`TOLERANCE` of the reference's 95%-interval half-width of that statistic (a statistic
  constant over the seeds: within :data:`EXACT` relative), and every part's verdict and the
  claim's are the reference's. Demonstrations are compared by their verdict only: some measure
  floating-point rounding itself (train-eval's eval-mode logit difference, ~4e-6), which moved
  by 0.7 of its reference interval's half-width when the kernels changed (measured:
  ``NORMLAB_KERNELS=numpy`` against the numba reference on one machine);
* **does not reproduce**: anything else (a statistic beyond the tolerance, another verdict, or
  runs whose set or configurations changed since the reference was made), with what was found.

A run of another configuration (other seeds, data, engine, size or step multiplier) has no
reference: the comparison says so, and checks nothing. Beside every experiment stands its
full-size verdict from the confirmatory reference.
"""

from __future__ import annotations

import gzip
import json
from importlib import resources

from ..runner.base import size_of
from ..runner.store import to_json

FORMAT = "normlab reference 1"
# A statistic may move by this share of the reference's 95%-interval half-width (per seed).
# Measured on one machine, the NumPy kernels against the numba reference (quick size): the
# largest evidence difference was 0.35 half-widths (train-eval: one test image of 1,000 on one
# seed), 0.04 in conv-bn. Half a half-width cannot flip a verdict by itself, and every part's
# verdict must be the same too.
TOLERANCE = 0.5
# ... or, when the reference's interval has no width (the same value on every seed), this
# relative difference
EXACT = 1e-9
STATUSES = ("bit-identical", "within tolerance", "does not reproduce", "no reference")
REPRODUCED = ("bit-identical", "within tolerance")
# what a run's configuration must share with a reference (torch-engine options never match:
# both references are numpy-engine runs)
KEYS = ("size", "data", "fingerprint", "engine", "seeds", "steps_scale")


# Experiments whose statistics are wall-clock measurements: no two runs give the same numbers,
# on any machine, so they are compared by the claim's verdict only (measured: the demo's cost
# experiment moved by 0.88 of the reference's half-width between two runs on one machine, and a
# part whose interval sits near its bar -- BN / no-BN training step time -- held in one quiet run
# and was inconclusive in the next).
BY_VERDICT = {"cost": "its statistics are timings, which vary with the machine and its load"}


def tolerance_text(name: str | None = None) -> str:
    """The tolerance rule of experiment ``name`` in words."""
    if name in BY_VERDICT:
        return (f"the claim's verdict the same ({BY_VERDICT[name]}, and a part's verdict "
                f"flips when its interval sits near the bar; compared by the claim's verdict "
                f"only)")
    return (f"every evidence part's statistic within {TOLERANCE:g} of the reference's "
            f"95%-interval half-width on every seed ({EXACT:g} relative where the reference's "
            f"value is the same on every seed), and every part's verdict and the claim's the "
            f"same (a demonstration is compared by its verdict only: some measure rounding "
            f"itself)")


def config_key(results: dict) -> dict:
    """The configuration of a results.json (or a reference) that a reference must match."""
    cfg = results["config"]
    key = {"size": size_of(cfg), "data": results["data"].get("name"),
           "fingerprint": results["data"].get("fingerprint"), "engine": cfg.get("engine"),
           "seeds": list(cfg.get("seeds", [cfg.get("seed")])),
           "steps_scale": cfg.get("steps_scale", 1.0)}
    for option in ("device", "workers", "sync_bn"):   # torch engine options, when set
        if option in cfg:
            key[option] = cfg[option]
    return key


def describe(key: dict) -> str:
    """``quick size, mnist5k, numpy engine, seeds 1000-1002`` (plus anything unusual)."""
    seeds = key["seeds"]
    span = (f"seed {seeds[0]}" if len(seeds) == 1 else
            f"seeds {seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1))
            else f"seeds {', '.join(map(str, seeds))}")
    text = f"{key['size']} size, {key['data']}, {key['engine']} engine, {span}"
    if key.get("steps_scale", 1.0) != 1.0:
        text += f", steps x{key['steps_scale']:g}"
    return text


def _criterion(c: dict) -> dict:
    iv = c["interval"]
    return {"part": c["part"], "statistic": c["statistic"], "role": c.get("role", "evidence"),
            "precondition": c.get("precondition", False), "bar": c["bar"],
            "direction": c["direction"], "verdict": c["verdict"],
            "interval": {k: iv[k] for k in ("per_seed", "per_seed_upper", "mean", "ci95",
                                             "constant", "text") if k in iv}}


def trim(results: dict) -> dict:
    """The reference of a finished results.json: its configuration and environment, and per
    experiment the verdict, its reason, the criteria (statistics with per-seed values and
    intervals) and every run's label, configuration and metrics. The report's texts, figures
    and tables are left out: they are rebuilt from the metrics."""
    exps = {}
    for name, e in results["experiments"].items():
        exps[name] = {"verdict": e["verdict"], "reason": e["reason"],
                      "criteria": [_criterion(c) for c in e.get("criteria", [])],
                      "runs": {k: {"label": r.get("label", ""), "config": r["config"],
                                   "metrics": r["metrics"]} for k, r in e["runs"].items()}}
    return {"format": FORMAT, "key": config_key(results), "normlab": results.get("normlab"),
            "environment": results.get("environment", {}),
            "wall_time": results.get("wall_time"), "experiments": exps}


def encode(reference: dict) -> bytes:
    """A reference file's bytes: compact JSON, gzip with no timestamp (the same reference
    gives the same bytes)."""
    text = json.dumps(reference, separators=(",", ":"), allow_nan=False)
    return gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0)


def decode(data: bytes) -> dict:
    """The reference in a file's bytes (what :func:`encode` wrote)."""
    return json.loads(gzip.decompress(data).decode("utf-8"))


def file_name(key: dict) -> str:
    """``quick-mnist5k-numpy.json.gz``: one reference per size, data and engine."""
    return f"{key['size']}-{key['data']}-{key['engine']}.json.gz"


def shipped() -> list[dict]:
    """Every reference shipped with normlab (``normlab/data/reference/*.json.gz``)."""
    folder = resources.files("normlab") / "data" / "reference"
    if not folder.is_dir():
        return []
    refs = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".json.gz"):
            ref = decode(entry.read_bytes())
            if ref.get("format") == FORMAT:
                refs.append(ref)
    return refs


def _canonical(metrics) -> str:
    # through to_json first: a fresh run's metrics may hold NumPy numbers or tuples
    return json.dumps(json.loads(to_json(metrics)), sort_keys=True)


def _other_design(run: dict, ref: dict) -> str | None:
    """None when the runs and their configurations are the reference's; else how they differ
    (the experiment changed since the reference was made: no tolerance applies)."""
    if set(run["runs"]) != set(ref["runs"]):
        return (f"runs {sorted(run['runs'])} differ from the reference's "
                f"{sorted(ref['runs'])}")
    for key, r in ref["runs"].items():
        if _canonical(run["runs"][key]["config"]) != _canonical(r["config"]):
            return f"run {key}: its configuration differs from the reference's"
    return None


def _metrics_identical(run: dict, ref: dict) -> str | None:
    """None when every run's metrics at every seed are the reference's; else the first
    difference, in words."""
    for key, r in ref["runs"].items():
        mine = run["runs"][key]
        for seed, metrics in r["metrics"].items():
            if _canonical(mine["metrics"].get(seed)) != _canonical(metrics):
                return f"run {key}, seed {seed}: the metrics differ"
    return None


def _within_tolerance(run: dict, ref: dict, by_verdict: bool = False) -> tuple[bool, str]:
    """(within tolerance, what was found): every criterion's per-seed statistic against the
    reference's, in units of the reference's 95%-interval half-width."""
    ref_crit = {c["statistic"]: c for c in ref["criteria"]}
    mine = {c["statistic"]: c for c in run.get("criteria", [])}
    if set(mine) != set(ref_crit):
        return False, "its criteria are not the reference's"
    other = [s for s, c in ref_crit.items() if mine[s]["verdict"] != c["verdict"]]
    if other and not by_verdict:
        return False, (f"{other[0]}: {mine[other[0]]['verdict']} vs the reference's "
                       f"{ref_crit[other[0]]['verdict']}")
    worst, where = 0.0, ""
    for stat, c in ref_crit.items():
        if by_verdict or c.get("role", "evidence") != "evidence":
            continue
        lo, hi = c["interval"]["ci95"]
        half = (hi - lo) / 2 if lo is not None and hi is not None else 0.0
        ends = [(a, b) for part in ("per_seed", "per_seed_upper")
                for a, b in zip(mine[stat]["interval"].get(part) or [],
                                c["interval"].get(part) or [], strict=False)]
        for a, b in ends:
            if (a is None) != (b is None):
                return False, f"{stat}: censored on a seed where the reference is not"
            if a is None:
                continue
            allowed = TOLERANCE * half if half > 0 else EXACT * max(1.0, abs(b))
            share = abs(a - b) / allowed if allowed > 0 else (0.0 if a == b else float("inf"))
            if share > worst:
                worst, where = share, f"{stat}: {a:.4g} vs {b:.4g}"
        if len(mine[stat]["interval"]["per_seed"]) != len(c["interval"]["per_seed"]):
            return False, f"{stat}: another number of seeds"
    if run.get("verdict") != ref["verdict"]:
        return False, f"verdict {run.get('verdict')} vs the reference's {ref['verdict']}"
    if by_verdict:
        return True, "the same claim verdict"
    if worst > 1:
        return False, f"largest difference {worst:.3g} x the tolerance ({where})"
    return True, (f"largest difference {worst:.3g} x the tolerance" + (f" ({where})"
                                                                       if where else ""))


def compare_experiment(run: dict, ref: dict | None, name: str | None = None) -> dict:
    """Experiment ``name`` of a finished results.json against its reference entry."""
    if ref is None:
        return {"status": "no reference", "detail": "no reference for this experiment"}
    design = _other_design(run, ref)
    if design is not None:
        return {"status": "does not reproduce", "detail": f"{design}: the experiment changed "
                "since the reference was made (make reference rebuilds it)"}
    difference = _metrics_identical(run, ref)
    if difference is None:
        return {"status": "bit-identical", "detail": "every run's metrics at every seed are "
                "the reference's, bit for bit"}
    ok, found = _within_tolerance(run, ref, by_verdict=name in BY_VERDICT)
    if ok:
        return {"status": "within tolerance", "detail": f"{difference}; {found}; tolerance: "
                f"{tolerance_text(name)}"}
    return {"status": "does not reproduce", "detail": f"{difference}; {found}"}


def _full_reference(refs: list[dict], key: dict) -> dict | None:
    """The confirmatory full-size reference: of the run's data and engine when there is
    one, else the first full-size reference."""
    full = [r for r in refs if r["key"]["size"] == "full"]
    same = [r for r in full if (r["key"]["data"], r["key"]["engine"]) ==
            (key["data"], key["engine"])]
    return (same or full or [None])[0]


def compare(results: dict, refs: list[dict] | None = None) -> dict:
    """The reproduction block of a finished results.json (after the verdicts are computed):
    the reference it was compared with (or why none), each experiment's status and its
    full-size verdict, and the one-line summary the report and the terminal lead with."""
    refs = shipped() if refs is None else refs
    key = config_key(results)
    ref = next((r for r in refs if {k: r["key"].get(k) for k in key} == key
                and set(r["key"]) <= set(key)), None)
    full = _full_reference(refs, key)
    exps = {}
    for name, e in results["experiments"].items():
        row = (compare_experiment(e, ref["experiments"].get(name), name) if ref is not None
               else {"status": "no reference", "detail": "no reference for this configuration"})
        full_exp = None if full is None else full["experiments"].get(name)
        row["full_verdict"] = None if full_exp is None else full_exp["verdict"]
        exps[name] = row
    checked = [n for n, r in exps.items() if r["status"] != "no reference"]
    reproduced = [n for n in checked if exps[n]["status"] in REPRODUCED]
    block = {"reference": None if ref is None else describe(ref["key"]),
             "full_reference": None if full is None else describe(full["key"]),
             "tolerance": tolerance_text(), "experiments": exps,
             "reproduced": len(reproduced), "checked": len(checked)}
    if ref is None:
        known = "; ".join(describe(r["key"]) for r in refs) or "none"
        block["note"] = (f"no reference for this run's configuration ({describe(key)}): the "
                         f"shipped references are {known}; reproduction not checked")
    elif len(checked) < len(exps):
        missing = [n for n in exps if n not in checked]
        block["note"] = f"no reference for {', '.join(missing)} (not counted)"
    block["summary"] = summary_sentence(block)
    return block


def verdict_counts(verdicts: list[str]) -> str:
    """``holds 4, inconclusive 4, does not hold 2`` (in the order they first appear)."""
    counts = {v: verdicts.count(v) for v in dict.fromkeys(verdicts)}
    return ", ".join(f"{v} {n}" for v, n in counts.items()) or "none"


def summary_sentence(block: dict) -> str:
    """"your run reproduces the reference: N/M; full-size verdicts: ..." (or why not)."""
    fulls = [r["full_verdict"] for r in block["experiments"].values() if r["full_verdict"]]
    total = len(block["experiments"])
    full = (f"full-size verdicts: {verdict_counts(fulls)} ({len(fulls)} of {total} "
            f"claim{'s' if total > 1 else ''}; {block['full_reference']})"
            if fulls else "full-size verdicts: none for these claims")
    if block["reference"] is None:
        return f"no reference for this run's configuration; {full}"
    return (f"your run reproduces the reference: {block['reproduced']}/{block['checked']}; "
            f"{full}")
