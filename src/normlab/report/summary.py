"""The terminal summary of a reproduction (issue 29, item 5): the reproduction sentence, then one
line per claim (name, verdict, the key statistic with its 95% interval, reproduced or
not, the full-size verdict), every line at most :data:`WIDTH` columns; the criteria, intervals
and figures are left to the report.
"""

from __future__ import annotations

import textwrap

from .._escape import one_line

WIDTH = 80
# reproduced column: the reference comparison's status (reproduce/reference.py), shortened
MARKS = {"bit-identical": "yes", "within tolerance": "~yes", "does not reproduce": "no",
         "no reference": "-"}
LEGEND = ("reproduced: yes = bit-identical, ~yes = within tolerance, no = does not reproduce, "
          "- = no reference")


def key_criterion(entry: dict) -> dict | None:
    """The criterion a claim's line shows: its first evidence part that is not a precondition
    (else its first criterion)."""
    crit = entry.get("criteria", [])
    main = [c for c in crit if c.get("role", "evidence") == "evidence"
            and not c.get("precondition")]
    return (main or crit or [None])[0]


def key_statistic(entry: dict) -> str:
    """``0.104 [0.0886, 0.119]``: the key criterion's mean and 95% interval (its bar is in the
    report)."""
    c = key_criterion(entry)
    if c is None:
        return "-"
    iv = c["interval"]
    plain = (len(iv.get("per_seed", [])) > 1 and not iv.get("constant")
             and not iv.get("per_seed_upper") and None not in (iv.get("mean"), *iv["ci95"]))
    # 3 significant digits: the interval's own text keeps 3 decimals, too wide for one line
    text = (f"{iv['mean']:.3g} [{iv['ci95'][0]:.3g}, {iv['ci95'][1]:.3g}]" if plain
            else iv.get("text", "-"))
    return text


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "~"


def summary_lines(results: dict, width: int = WIDTH) -> list[str]:
    """The summary as plain lines of at most ``width`` characters (control characters shown
    escaped: the texts come from a results file)."""
    block = results.get("reproduction") or {}
    rows = block.get("experiments", {})
    lines = textwrap.wrap(one_line(block.get("summary", "reproduction not checked")), width)
    if block.get("note"):
        lines += textwrap.wrap(one_line(f"note: {block['note']}"), width)
    names = [one_line(n) for n in results["experiments"]]
    name_w = min(max([len("claim"), *map(len, names)]), 20)
    verdict_w, mark_w, full_w = 13, 4, 13
    stat_w = width - name_w - verdict_w - mark_w - full_w - 8
    fmt = f"{{:<{name_w}}}  {{:<{verdict_w}}}  {{:<{stat_w}}}  {{:<{mark_w}}}  {{}}"
    lines.append(fmt.format("claim", "verdict", _fit("key statistic [95% CI]", stat_w), "rep.",
                            "full size"))
    for name, e in results["experiments"].items():
        row = rows.get(name, {})
        lines.append(fmt.format(
            _fit(one_line(name), name_w), _fit(one_line(e["verdict"]), verdict_w),
            _fit(one_line(key_statistic(e)), stat_w),
            MARKS.get(row.get("status"), "-"),
            _fit(one_line(row.get("full_verdict") or "-"), full_w)).rstrip())
    lines += textwrap.wrap(LEGEND + "; the criteria, intervals and figures: the report.", width)
    return lines
