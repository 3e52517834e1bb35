"""A results.json as Markdown tables, for RESULTS.md: verdicts with their intervals, and the
published numbers beside ours. Everything comes from results.json, so RESULTS.md is regenerated,
never hand-copied: ``normlab report DIR --markdown FILE``.
"""

from __future__ import annotations

import re

from .._escape import markdown as _cell
from ..runner.base import size_of
from .ledger import ledger_markdown


def _name(name) -> str:
    """An experiment name as code when it is a plain name (all of the registry's are)."""
    return f"`{name}`" if re.fullmatch(r"[a-z0-9-]+", str(name)) else _cell(name)


def _ci(iv: dict | None) -> str:
    if not iv:
        return "-"
    if iv.get("text"):
        return iv["text"]
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
             "| experiment | verdict | evidence: mean [95% interval] vs bar (Holm p of holds) "
             "-> verdict | demonstrations (cannot fail; never make a claim hold) | compute s, "
             "summed over runs: wall / CPU |", "|---|---|---|---|---|"]
    for name, e in exps.items():
        crit = e.get("criteria", [])
        evidence = "<br>".join(
            _cell(f"{c['part']}: {_ci(c['interval'])} vs {c['direction']} {c['bar']:g}"
                  + (f" (p {c['p_holds_holm']:.2g})" if c.get("p_holds_holm") is not None
                     else "") + f" -> {c['verdict']}")
            for c in crit if c.get("role", "evidence") == "evidence")
        demos = "<br>".join(
            _cell(f"{c['part']}: {_ci(c['interval'])} vs {c['direction']} {c['bar']:g} -> "
                  f"{c['verdict']}") for c in crit if c.get("role") == "demonstration") or "-"
        timing = (f"{results.get('timing', {}).get(name, '?')} / "
                  f"{results.get('cpu_time', {}).get(name, '?')}")
        lines.append(f"| {_name(name)} | **{_cell(e['verdict'])}** | {evidence or '-'} | "
                     f"{demos} | {_cell(timing)} |")
    lines += ["", "Published beside measured:", "",
              "| experiment | source | quantity | published | source's setup | ours: mean "
              "[95% interval] | our scale; what is comparable |",
              "|---|---|---|---|---|---|---|"]
    for name, e in exps.items():
        for p in e.get("published", []):
            ours = _ci(e.get("intervals", {}).get(p["ours"])) if p.get("ours") else "-"
            what = p["quantity"] + (" (qualitative)" if p["qualitative"] else "")
            mine = f"{ours} ({p['ours']})" if p.get("ours") else ours
            scale = e.get("scale_note", "") + (f"; comparable: {p['comparable']}"
                                               if p.get("comparable") else "")
            lines.append(f"| {_name(name)} | {_cell(p['source'])}, {_cell(p['where'])} | "
                         f"{_cell(what)} | {_cell(p['value'])} | {_cell(p['setup'])} | "
                         f"{_cell(mine)} | {_cell(scale)} |")
    lines += ["", f"Intervals: {_cell(results.get('intervals_method', ''))}.", "",
              f"Rule: {_cell(results.get('combination_rule', ''))}", "",
              f"Seeds: {_cell(results.get('confirmatory_rule', ''))}", "",
              "Pilot seeds and design changes after seeing a result:", ""]
    return "\n".join(lines) + "\n" + design_changes(results) + ledger_markdown(results)


def design_changes(results: dict) -> str:
    """Per experiment: the pilot seeds and every design change after seeing a result."""
    lines = []
    for name, e in results["experiments"].items():
        lines += [f"- **`{name}`**, piloted on: {_cell(e.get('pilot_seeds') or 'not recorded')}"]
        lines += [f"  - {_cell(d['what'])} ({_cell(d['when'])}): {_cell(d['why'])}"
                  for d in e.get("design_changes", [])] or ["  - none recorded"]
    return "\n".join(lines) + "\n"
