"""``normlab bench``'s result as rich tables and GitHub markdown."""

from __future__ import annotations

from .cases import LABELS

IMPL_ORDER = ("normlab-numba", "normlab-numpy", "textbook", "torch")


def table(result: dict):
    """The result as a rich Table: one row per case and mode, ms (GB/s) per implementation."""
    from rich.table import Table

    impls = [i for i in IMPL_ORDER if any(r["impl"] == i for r in result["rows"])]
    t = Table(title=f"normlab bench (float32, median of {result['repeats']}, interleaved; "
                    f"copy {result['copy_gbps']:.1f} GB/s; torch threads "
                    f"{result['machine']['torch_threads']})")
    for col in ("case", "shape", "mode", *[f"{i} ms (GB/s)" for i in impls],
                "numba/torch", "numba % copy"):
        t.add_column(col, justify="left" if col in ("case", "shape", "mode") else "right")
    groups: dict[tuple, dict[str, dict]] = {}
    for r in result["rows"]:
        groups.setdefault((r["case"], tuple(r["shape"]), r["mode"]), {})[r["impl"]] = r
    for (case, shape, mode), by_impl in groups.items():
        cells = []
        for i in impls:
            r = by_impl.get(i)
            cells.append("-" if r is None else f"{r['median_s'] * 1e3:.3f} ({r['gbps']:.1f})")
        fast = by_impl.get("normlab-numba") or by_impl["normlab-numpy"]
        speed = fast["speedup_vs_torch"]
        t.add_row(case, "x".join(map(str, shape)), LABELS[mode],
                  *cells, "-" if speed is None else f"{speed:.2f}x",
                  f"{100 * fast['copy_fraction']:.0f}%")
    return t


def mlp_line(result: dict) -> str:
    mlp = result["mlp"]
    if "skipped" in mlp:
        return f"paper MLP: skipped ({mlp['skipped']})"
    line = f"paper MLP (784-100-100-100-10, BN, sigmoid, batch 60): numpy engine " \
           f"{mlp['numpy_steps_per_s']:.0f} steps/s"
    if "torch_steps_per_s" in mlp:
        line += f", torch eager {mlp['torch_steps_per_s']:.0f} steps/s, ratio {mlp['ratio']:.2f}x"
    return line


def models_table(result: dict):
    """The model rows as a rich Table: steps/s per engine, ratio, NumPy time per layer type."""
    from rich.table import Table

    t = Table(title="experiments' models, training steps/s (one thread each, median of rounds)")
    for col in ("model", "numpy engine", "torch eager", "numpy/torch", "numpy time by layer"):
        t.add_column(col, justify="left" if col in ("model", "numpy time by layer") else "right")
    for row in result["models"].get("rows", []):
        t.add_row(row["model"], f"{row['numpy_steps_per_s']:.0f}",
                  f"{row['torch_steps_per_s']:.0f}", f"{row['ratio']:.2f}x", _shares(row))
    return t


def _shares(row: dict) -> str:
    return ", ".join(f"{k} {100 * v:.0f}%" for k, v in row["shares"].items() if v >= 0.005)


def models_markdown(result: dict) -> str:
    """The model rows as GitHub markdown (for the README)."""
    lines = ["| model | NumPy engine | torch eager | NumPy / torch | NumPy time by layer type |",
             "|---|---|---|---|---|"]
    for row in result["models"].get("rows", []):
        lines.append(f"| {row['model']} | {row['numpy_steps_per_s']:.0f} steps/s | "
                     f"{row['torch_steps_per_s']:.0f} steps/s | {row['ratio']:.2f}x | "
                     f"{_shares(row)} |")
    return "\n".join(lines)


def markdown(result: dict) -> str:
    """The table as GitHub markdown (for the README): ms and GB/s per implementation."""
    impls = [i for i in IMPL_ORDER if any(r["impl"] == i for r in result["rows"])]
    head = ["case", "shape", "pass", *impls, "numba vs torch", "numba % of copy BW"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    groups: dict[tuple, dict[str, dict]] = {}
    for r in result["rows"]:
        groups.setdefault((r["case"], tuple(r["shape"]), r["mode"]), {})[r["impl"]] = r
    for (case, shape, mode), by_impl in groups.items():
        cells = [f"{by_impl[i]['median_s'] * 1e3:.3f} ms ({by_impl[i]['gbps']:.1f} GB/s)"
                 if i in by_impl else "-" for i in impls]
        fast = by_impl.get("normlab-numba") or by_impl["normlab-numpy"]
        speed = fast["speedup_vs_torch"]
        lines.append("| " + " | ".join([case, "x".join(map(str, shape)),
                                        LABELS[mode], *cells,
                                        "-" if speed is None else f"{speed:.2f}x",
                                        f"{100 * fast['copy_fraction']:.0f}%"]) + " |")
    return "\n".join(lines)
