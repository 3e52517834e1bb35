"""The report's section on the study notes' statements: one row per statement, the part that
tests it and what this folder measured (rows built by :mod:`normlab.reproduce.ledger`)."""

from __future__ import annotations

import html

from .._escape import markdown as _md

HEAD = ["note", "statement", "status", "tested by", "note's number", "measured", "verdict",
        "remark"]


def _cells(r: dict) -> list[str]:
    where = f"{r['experiment']}: {r['part']}" if r.get("experiment") else ""
    return [r["note"], r["statement"], r["status"], where, r.get("number", ""),
            r.get("measured", ""), r.get("verdict", ""), r.get("remark", "")]


def _summary(ledger: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in ledger["counts"].items())


def ledger_html(results: dict) -> str:
    """The HTML section (empty when ``results`` has no ledger)."""
    ledger = results.get("ledger")
    if not ledger:
        return ""
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in HEAD)
    body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in _cells(r)) + "</tr>"
                   for r in ledger["rows"])
    return ('<h2 id="ledger">The notes\' statements</h2>'
            f'<p class="meta">Every statement of the five study notes (shared/seeds) that can '
            f'be true or false, in our words: {e(_summary(ledger))}. A tested statement shows '
            f'its part\'s verdict (and the claim\'s); a demonstration reads shown / not shown.'
            f'</p><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')


def ledger_markdown(results: dict) -> str:
    """The Markdown section (empty when ``results`` has no ledger)."""
    ledger = results.get("ledger")
    if not ledger:
        return ""
    lines = ["", "The notes' statements (" + _md(_summary(ledger)) + "):", "",
             "| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    lines += ["| " + " | ".join(_md(c) for c in _cells(r)) + " |" for r in ledger["rows"]]
    return "\n".join(lines) + "\n"
