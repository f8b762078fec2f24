"""Human-readable output: rich tables for a terminal, aligned plain text for pipes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def plain_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns aligned with two spaces, a header line first; no trailing spaces (``grep``/``awk`` friendly)."""
    cells = [[str(c) for c in columns]] + [[str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells)


def _fmt(n: int) -> str:
    return f"{n:,}"


def print_summary(summary: dict[str, Any], meta: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table("part", "component", "parameters", "trainable", title="vlmkit model" + (" (meta device)" if meta else ""))
    for p in summary["parts"]:
        table.add_row(p["part"], p["component"], _fmt(p["parameters"]), _fmt(p["trainable"]))
    table.add_row("[b]total[/b]", "", f"[b]{_fmt(summary['parameters'])}[/b]", f"[b]{_fmt(summary['trainable'])}[/b]")
    console.print(table)
    views = ", ".join(f"{k}: {v['size']} px ({v['resize']})" for k, v in summary["views"].items()) or "none"
    tokens = summary["visual_tokens_per_image"]
    extra = " + object tokens (one per box)" if summary.get("extra_tokens") else ""
    console.print(f"visual tokens per image: {tokens}{extra}   views: {views}")
    console.print(f"llm: {summary['llm']} (hidden size {summary['d_llm']})   objectives: "
                  + ", ".join(f"{k} x{w}" for k, w in summary["objectives"].items()))
    if summary.get("checkpoint"):
        console.print(f"checkpoint written to {summary['checkpoint']}")
