"""``normlab list --ledger``: the notes' statements and what checks each
(:mod:`normlab.experiments.ledger`), as a table or (``--json``) a JSON list."""

from __future__ import annotations

import json

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def print_ledger(as_json: bool) -> None:
    from ..experiments.ledger import LEDGER, counts

    if as_json:
        print(json.dumps([s.to_json() for s in LEDGER], indent=1, ensure_ascii=False))
        return
    table = Table(title="the notes' statements (shared/seeds/NNN_*.txt)")
    for name in ("note", "statement", "status", "checked by", "note's number", "remark"):
        table.add_column(name)
    for s in LEDGER:
        where = f"{s.experiment}: {s.part}" if s.status == "tested" else ""
        table.add_row(*(escape(v) for v in (s.note, s.statement, s.status, where, s.number,
                                            s.remark)))
    console = Console()
    console.print(table)
    console.print(", ".join(f"{k}: {v}" for k, v in counts().items()), highlight=False)
