"""A results.json as Markdown tables, for RESULTS.md: verdicts with their intervals, and the
published numbers beside ours. Everything comes from results.json, so RESULTS.md is regenerated,
never hand-copied: ``normlab report DIR --markdown FILE``.
"""

from __future__ import annotations

import re

from .._escape import markdown as _cell
from ..runner.base import size_of


def _name(name) -> str:
    """An experiment name as code when it is a plain name (all of the registry's are)."""
    return f"`{name}`" if re.fullmatch(r"[a-z0-9-]+", str(name)) else _cell(name)


def _ci(iv: dict | None) -> str:
    if not iv:
        return "-"
    def f(v):
        return "-" if v is None else f"{v:.3g}"
    if len(iv["per_seed"]) == 1:
        return f"{f(iv['mean'])} (1 seed)"
    return f"{f(iv['mean'])} [{f(iv['ci95'][0])}, {f(iv['ci95'][1])}]"


def render(results: dict) -> str:
    cfg, data, exps = results["config"], results["data"], results["experiments"]
    seeds = cfg.get("seeds", [cfg.get("seed")])
    size = size_of(cfg)
    lines = [f"### {_cell(data['description'])}: {_cell(size)} size, seeds "
             f"{_cell(', '.join(map(str, seeds)))}, engine {_cell(cfg['engine'])}", "",
             "| experiment | verdict | each part: mean [95% interval] vs bar -> verdict | "
             "compute s, summed over runs: wall / CPU |", "|---|---|---|---|"]
    for name, e in exps.items():
        parts = "<br>".join(
            _cell(f"{c['part']}: {_ci(c['interval'])} vs {c['direction']} {c['bar']:g} -> "
                  f"{c['verdict']}") for c in e.get("criteria", []))
        timing = (f"{results.get('timing', {}).get(name, '?')} / "
                  f"{results.get('cpu_time', {}).get(name, '?')}")
        lines.append(f"| {_name(name)} | **{_cell(e['verdict'])}** | {parts} | "
                     f"{_cell(timing)} |")
    lines += ["", "Published beside measured:", "",
              "| experiment | source | quantity | published | source's setup | ours: mean "
              "[95% interval] | our scale |", "|---|---|---|---|---|---|---|"]
    for name, e in exps.items():
        for p in e.get("published", []):
            ours = _ci(e.get("intervals", {}).get(p["ours"])) if p.get("ours") else "-"
            what = p["quantity"] + (" (qualitative)" if p["qualitative"] else "")
            mine = f"{ours} ({p['ours']})" if p.get("ours") else ours
            lines.append(f"| {_name(name)} | {_cell(p['source'])}, {_cell(p['where'])} | "
                         f"{_cell(what)} | {_cell(p['value'])} | {_cell(p['setup'])} | "
                         f"{_cell(mine)} | {_cell(e.get('scale_note', ''))} |")
    return "\n".join(lines) + "\n"
