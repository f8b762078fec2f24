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
    """The model's parts and sizes: a rich table at a terminal, plain aligned text in a pipe."""
    from .app import interactive

    title = "vlmkit model" + (" (meta device)" if meta else "")
    rows = [[p["part"], p["component"], _fmt(p["parameters"]), _fmt(p["trainable"])] for p in summary["parts"]]
    total = ["total", "", _fmt(summary["parameters"]), _fmt(summary["trainable"])]
    views = ", ".join(f"{k}: {v['size']} px ({v['resize']})" for k, v in summary["views"].items()) or "none"
    tokens = summary["visual_tokens_per_image"]
    extra = " + object tokens (one per box)" if summary.get("extra_tokens") else ""
    per = "per crop (base crop or tile)" if summary.get("tiling") else "per image"
    lines = [f"visual tokens {per}: {tokens}{extra}   views: {views}",
             f"llm: {summary['llm']} (hidden size {summary['d_llm']})   objectives: "
             + ", ".join(f"{k} x{w}" for k, w in summary["objectives"].items())]
    if summary.get("tiling"):
        t = summary["tiling"]
        lines.append(f"tiling: {len(t['pinpoints'])} pinpoints, merge {t['merge']}"
                     + (f", anyres_max {t['anyres_max']}" if t.get("anyres_max") else "")
                     + " (visual tokens per image depend on its size: --image-size WxH)")
    for size, n in (summary.get("visual_tokens_for") or {}).items():
        lines.append(f"visual tokens for a {size} image: {n:,}")
    if summary.get("checkpoint"):
        lines.append(f"checkpoint written to {summary['checkpoint']}")
    if not interactive():
        print(title)
        print(plain_table(("part", "component", "parameters", "trainable"), rows + [total]))
        print("\n".join(lines))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table("part", "component", "parameters", "trainable", title=title)
    for r in rows:
        table.add_row(*r)
    table.add_row(*[f"[b]{v}[/b]" if v else "" for v in total])
    console.print(table)
    for line in lines:
        console.print(line, highlight=False)
