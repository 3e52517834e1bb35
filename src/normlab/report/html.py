"""``OUT/report.html``: one self-contained file (figures as base64 PNG, inline CSS) readable on a
phone and a desktop: an overview table of claims and verdicts, then per experiment the claim,
its source, the setup, the figures, the measured numbers and the verdict with its rule.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from .._io import atomic_write_text
from ..runner.base import size_of
from .ledger import ledger_html

CSS = """
:root { --fg:#1b1f23; --muted:#57606a; --line:#d0d7de; --bg:#ffffff; --card:#f6f8fa; }
* { box-sizing: border-box; }
body { font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       background: var(--bg); margin: 0; padding: 1rem; }
main { max-width: 1100px; margin: 0 auto; }
h1 { font-size: 1.6rem; margin: .2rem 0 .5rem; } h2 { font-size: 1.3rem; margin-top: 2rem; }
.meta { color: var(--muted); font-size: .9rem; }
table { border-collapse: collapse; width: 100%; margin: .6rem 0; font-size: .95rem; }
th, td { border: 1px solid var(--line); padding: .35rem .5rem; text-align: left;
         vertical-align: top; }
th { background: var(--card); }
.scroll { overflow-x: auto; }
section { border-top: 2px solid var(--line); margin-top: 1.5rem; }
.claim { background: var(--card); border-left: 4px solid #0969da; padding: .5rem .8rem; }
figure { margin: .8rem 0; } figure img { max-width: 100%; height: auto; display: block;
         border: 1px solid var(--line); }
.v { font-weight: 600; padding: .1rem .5rem; border-radius: 1rem; white-space: nowrap; }
.v-holds { background: #dafbe1; color: #116329; }
.v-does-not-hold { background: #ffebe9; color: #a40e26; }
.v-inconclusive { background: #fff8c5; color: #7d4e00; }
.v-demonstrated, .v-shown { background: #ddf4ff; color: #0a3069; }
.v-not-shown { background: #ffebe9; color: #a40e26; }
@media (max-width: 600px) { body { padding: .5rem; font-size: 15px; } th, td { padding: .25rem; } }
"""


def _e(x) -> str:
    return html.escape(str(x))


def _badge(verdict: str) -> str:
    return f'<span class="v v-{_e(verdict).replace(" ", "-")}">{_e(verdict)}</span>'


def _num(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _ci(iv: dict | None) -> str:
    """``mean [lo, hi]`` of a results.json interval ("x on every seed", censoring included)."""
    if not iv:
        return "-"
    if iv.get("text"):
        return iv["text"]
    lo, hi = iv["ci95"]
    if len(iv["per_seed"]) == 1:
        return f"{_num(iv['mean'])} (1 seed)"
    return f"{_num(iv['mean'])} [{_num(lo)}, {_num(hi)}]"


def _table(head: list[str], rows: list[list[str]]) -> str:
    """An HTML table; cells are already escaped HTML."""
    out = ['<div class="scroll"><table><thead><tr>', *(f"<th>{h}</th>" for h in head),
           "</tr></thead><tbody>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def published_rows(name: str, e: dict, data: dict) -> list[list[str]]:
    """Published | ours | our scale, one row per number a source reports (escaped HTML)."""
    rows = []
    for p in e.get("published", []):
        ours = _ci(e.get("intervals", {}).get(p["ours"])) if p.get("ours") else "-"
        what = f"{_e(p['quantity'])}" + (" <em>(qualitative)</em>" if p["qualitative"] else "")
        rows.append([_e(name), f"{_e(p['source'])}, {_e(p['where'])}", what, _e(p["value"]),
                     _e(p["setup"]),
                     f"{_e(ours)}" + (f"<br><small>{_e(p['ours'])}</small>" if p.get("ours")
                                      else ""),
                     f"{_e(data['name'])}, {len(e.get('seeds', []))} seeds; "
                     f"{_e(e.get('scale_note', ''))}"
                     + (f"<br><strong>Comparable:</strong> {_e(p['comparable'])}"
                        if p.get("comparable") else "")])
    return rows


PUBLISHED_HEAD = ["Experiment", "Source", "Quantity", "Published", "Source's setup",
                  "Ours: mean [95% interval]", "Our scale; what is comparable"]


def _p(v) -> str:
    return "-" if v is None else f"{v:.2g}"


def criteria_tables(e: dict) -> list[str]:
    """The evidence parts (with Holm-adjusted p-values) and, under their own heading, the
    demonstrations, each with its numbers (escaped HTML)."""
    crit = e.get("criteria", [])
    evidence = [c for c in crit if c.get("role", "evidence") == "evidence"]
    demos = [c for c in crit if c.get("role") == "demonstration"]
    out = ["<h3>Evidence</h3>", _table(
        ["Criterion", "Statistic", "Bar", "Mean [95% interval]", "Per seed", "Censored",
         "Holm p: holds / does not hold", "Verdict"],
        [[_e(c["part"]) + (" <em>(precondition)</em>" if c["precondition"] else ""),
          _e(c["statistic"]), _e(f"{c['direction']} {c['bar']:g}"), _e(_ci(c["interval"])),
          _e(", ".join(_num(v) for v in c["interval"]["per_seed"])),
          _e(c["interval"].get("censored", "-")),
          _e(f"{_p(c.get('p_holds_holm'))} / {_p(c.get('p_fails_holm'))}"),
          _badge(c["verdict"])] for c in evidence])]
    if demos:
        out += ["<h3>Demonstrations (cannot fail by construction; never make the claim "
                "hold)</h3>", _table(
                    ["Part", "Statistic", "Bar", "Value", "Per seed", "Shown on every seed"],
                    [[_e(c["part"]), _e(c["statistic"]), _e(f"{c['direction']} {c['bar']:g}"),
                      _e(_ci(c["interval"])),
                      _e(", ".join(_num(v) for v in c["interval"]["per_seed"])),
                      _badge(c["verdict"])] for c in demos])]
    return out


def design_html(e: dict) -> str:
    """Pilot seeds and the design changes made after seeing a result (escaped HTML)."""
    changes = e.get("design_changes", [])
    items = "".join(f"<li><strong>{_e(d['what'])}</strong> ({_e(d['when'])}): {_e(d['why'])}"
                    f"</li>" for d in changes)
    return (f'<p class="meta"><strong>Design.</strong> Piloted on: '
            f'{_e(e.get("pilot_seeds") or "not recorded")}. Changed after seeing a result:'
            f'</p><ul class="meta">{items or "<li>none recorded</li>"}</ul>')


def reproduction_html(results: dict) -> list[str]:
    """The overview's lead: whether this run reproduces the shipped reference, and the
    full-size verdicts (the block :func:`normlab.reproduce.reference.compare` wrote)."""
    block = results.get("reproduction")
    if not block:
        return ['<p class="meta">Not compared with a reference.</p>']
    out = [f'<p class="claim"><strong>{_e(block["summary"])}</strong></p>']
    if block.get("reference"):
        out.append(f'<p class="meta"><strong>Reference.</strong> {_e(block["reference"])}, '
                   f"shipped with normlab. Reproduces: bit-identical, or within tolerance "
                   f'when the floating point differs ({_e(block["tolerance"])}).</p>')
    if block.get("note"):
        out.append(f'<p class="meta"><strong>Note.</strong> {_e(block["note"])}</p>')
    return out


def _reproduction_cells(results: dict, name: str) -> list[str]:
    row = (results.get("reproduction") or {}).get("experiments", {}).get(name, {})
    full = row.get("full_verdict")
    return [_e(row.get("status", "not compared")), _badge(full) if full else "-"]


def _reproduction_line(results: dict, name: str) -> str:
    block = results.get("reproduction") or {}
    row = block.get("experiments", {}).get(name)
    if row is None:
        return ""
    full = row.get("full_verdict")
    return (f'<p><strong>Reference:</strong> {_e(row["status"])} &mdash; {_e(row["detail"])}. '
            f"<strong>Full-size verdict</strong> "
            f'({_e(block.get("full_reference") or "none shipped")}): '
            f'{_badge(full) if full else "none"}.</p>')


def render(out: Path, results: dict) -> str:
    cfg, data = results["config"], results["data"]
    exps = results["experiments"]
    seeds = cfg.get("seeds", [cfg.get("seed")])
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             "<title>normlab reproduce report</title>", f"<style>{CSS}</style></head><body><main>",
             "<h1>Batch Normalization: published claims vs measured</h1>",
             f'<p class="meta">normlab {_e(results["normlab"])} &middot; data: '
             f'{_e(data["description"])} &middot; engine: {_e(cfg["engine"])} &middot; seeds '
             f'{_e(", ".join(map(str, seeds)))} &middot; {_e(size_of(cfg))} '
             f'size{" (steps x" + _e(cfg["steps_scale"]) + ")" if cfg["steps_scale"] != 1 else ""}'
             f"</p>",
             f'<p class="meta"><strong>Intervals.</strong> '
             f'{_e(results.get("intervals_method", ""))}.</p>',
             f'<p class="meta"><strong>Rule.</strong> '
             f'{_e(results.get("combination_rule", ""))}</p>',
             f'<p class="meta"><strong>Seeds.</strong> '
             f'{_e(results.get("confirmatory_rule", ""))}</p>',
             '<h2 id="overview">Overview</h2>', *reproduction_html(results),
             _table(["Experiment", "Claim", "Verdict", "Reproduces the reference",
                     "Full-size verdict"],
                    [[f'<a href="#{_e(n)}">{_e(n)}</a>', _e(e["claim"]), _badge(e["verdict"]),
                      *_reproduction_cells(results, n)] for n, e in exps.items()]),
             '<h2 id="published">Published beside measured</h2>',
             _table(PUBLISHED_HEAD, [r for n, e in exps.items()
                                     for r in published_rows(n, e, data)])]
    for name, e in exps.items():
        parts += [f'<section id="{_e(name)}"><h2>{_e(name)}: {_e(e["title"])}</h2>',
                  f'<p class="claim"><strong>Claim.</strong> {_e(e["claim"])}</p>',
                  f'<p><strong>Source.</strong> {_e(e["source"])}</p>',
                  f'<p><strong>Setup.</strong> {_e(e["setup"])}</p>']
        for rel in e["figures"]:
            png = (out / rel).read_bytes()
            b64 = base64.b64encode(png).decode("ascii")
            parts.append(f'<figure><img alt="{_e(rel)}" src="data:image/png;base64,{b64}">'
                         f"<figcaption class=\"meta\">{_e(rel)} (also as SVG)</figcaption>"
                         "</figure>")
        parts += criteria_tables(e)
        parts.append(_table(["Measured", "Mean [95% interval] or value"],
                            [[_e(k), _e(v)] for k, v in e["measured"].items()]))
        timing = results.get("timing", {}).get(name, "?")
        cpu = results.get("cpu_time", {}).get(name, "?")
        parts += [f'<p><strong>Verdict:</strong> {_badge(e["verdict"])} &mdash; '
                  f'{_e(e["reason"])}</p>', _reproduction_line(results, name),
                  f'<p class="meta"><strong>Rule.</strong> {_e(e["thresholds"])}</p>',
                  design_html(e),
                  f'<p class="meta">Per-step numbers: {_e(e["csv"])}; compute time '
                  f'{_e(timing)} s, CPU {_e(cpu)} s (all runs and seeds).</p></section>']
    parts.append(ledger_html(results))
    env = results["environment"]
    parts.append(f'<p class="meta">Data source: {_e(data["source"])}. Environment: '
                 + ", ".join(f"{_e(k)} {_e(v)}" for k, v in env.items())
                 + f'; wall time {_e(results.get("wall_time", "?"))} s.</p></main></body></html>')
    return "\n".join(parts)


def write_report(out: Path, results: dict) -> Path:
    path = Path(out) / "report.html"
    atomic_write_text(path, render(Path(out), results))
    return path
