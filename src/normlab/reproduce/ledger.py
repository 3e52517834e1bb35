"""The notes' statements (:mod:`normlab.experiments.ledger`) beside what a results folder
measured: each tested statement gets its part's verdict and interval, or says the experiment was
not run in this folder. Written into ``results.json`` as ``ledger`` for the report."""

from __future__ import annotations

from ..experiments.ledger import LEDGER, counts

NOT_RUN = "not run in this folder"


def ledger_rows(results: dict) -> dict:
    """{"counts": ..., "rows": [statement + measured/verdict]} for ``results``."""
    exps = results.get("experiments", {})
    rows = []
    for s in LEDGER:
        row = {**s.to_json(), "verdict": "", "measured": ""}
        if s.status == "tested":
            entry = exps.get(s.experiment)
            part = None if entry is None else next(
                (c for c in entry.get("criteria", []) if c["part"] == s.part), None)
            if part is None:
                row["verdict"] = NOT_RUN
            else:
                row["verdict"] = f"{part['verdict']} (claim: {entry['verdict']})"
                text = part.get("interval", {}).get("text", "")
                row["measured"] = f"{text} vs {part['direction']} {part['bar']:g}"
        rows.append(row)
    return {"counts": counts(), "rows": rows}
