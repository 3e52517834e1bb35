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
    """``mean [lo, hi]`` of a results.json interval."""
    if not iv:
        return "-"
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
                     f"{_e(e.get('scale_note', ''))}"])
    return rows


PUBLISHED_HEAD = ["Experiment", "Source", "Quantity", "Published", "Source's setup",
                  "Ours: mean [95% interval]", "Our scale"]


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
             f'<p class="meta">Every claim is judged on statistics with a 95% interval over '
             f'the seeds ({_e(results.get("intervals_method", ""))}): <em>holds</em> when the '
             f"whole interval clears the bar fixed before the run, <em>does not hold</em> when "
             f"it lies wholly on the other side, <em>inconclusive</em> otherwise.</p>",
             '<h2 id="overview">Overview</h2>',
             _table(["Experiment", "Claim", "Verdict"],
                    [[f'<a href="#{_e(n)}">{_e(n)}</a>', _e(e["claim"]), _badge(e["verdict"])]
                     for n, e in exps.items()]),
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
        parts.append(_table(
            ["Criterion", "Statistic", "Bar", "Mean [95% interval]", "Per seed", "Verdict"],
            [[_e(c["part"]) + (" <em>(precondition)</em>" if c["precondition"] else ""),
              _e(c["statistic"]), _e(f"{c['direction']} {c['bar']:g}"), _e(_ci(c["interval"])),
              _e(", ".join(_num(v) for v in c["interval"]["per_seed"])), _badge(c["verdict"])]
             for c in e.get("criteria", [])]))
        parts.append(_table(["Measured", "Mean [95% interval] or value"],
                            [[_e(k), _e(v)] for k, v in e["measured"].items()]))
        timing = results.get("timing", {}).get(name, "?")
        cpu = results.get("cpu_time", {}).get(name, "?")
        parts += [f'<p><strong>Verdict:</strong> {_badge(e["verdict"])} &mdash; '
                  f'{_e(e["reason"])}</p>',
                  f'<p class="meta"><strong>Rule.</strong> {_e(e["thresholds"])}</p>',
                  f'<p class="meta">Per-step numbers: {_e(e["csv"])}; compute time '
                  f'{_e(timing)} s, CPU {_e(cpu)} s (all runs and seeds).</p></section>']
    env = results["environment"]
    parts.append(f'<p class="meta">Data source: {_e(data["source"])}. Environment: '
                 + ", ".join(f"{_e(k)} {_e(v)}" for k, v in env.items())
                 + f'; wall time {_e(results.get("wall_time", "?"))} s.</p></main></body></html>')
    return "\n".join(parts)


def write_report(out: Path, results: dict) -> Path:
    path = Path(out) / "report.html"
    atomic_write_text(path, render(Path(out), results))
    return path
