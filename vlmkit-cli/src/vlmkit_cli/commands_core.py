"""Commands that inspect and assemble models: plugins, info, build, import-hf, export-hf."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from .app import app, interactive
from .errors import fail, friendly
from .render import plain_table


# --------------------------------------------------------------------------------------------- plugins
@app.command()
@friendly
def plugins(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    kind: Optional[str] = typer.Option(None, "--kind", help="Only this kind (encoder, connector, ...)."),
    check: bool = typer.Option(False, "--check", help="Import every plugin to verify it loads (imports torch)."),
) -> None:
    """List every discovered component: kind, name, distribution, version and status."""
    from vlmkit.registry import GROUPS, registry, strict_mode

    if kind is not None and kind != "hooks" and kind not in GROUPS:
        fail(f"unknown kind '{kind}'; kinds: {', '.join(GROUPS)}, hooks")
    if kind == "hooks":
        rows = []
    elif check:
        rows = [e.as_dict(status) for e, status in registry.check_all() if kind in (None, e.kind)]
    else:
        rows = [e.as_dict() for e in registry.entries(kind)]
    if kind in (None, "hooks"):  # hook modules: loading them imports only the plugin's hooks module
        from vlmkit.hooks import get_plugin_manager, hook_modules

        get_plugin_manager()
        rows += [h.as_dict() for h in hook_modules]
    if strict_mode() and not check:
        bad = [r for r in rows if r["status"] != "ok"]
        if bad:
            fail(f"{bad[0]['kind']} plugin '{bad[0]['distribution']}:{bad[0]['name']}' ({bad[0]['target']}): "
                 f"{bad[0]['status']}")
    clashes = registry.collisions()
    for r in rows:  # a name several distributions provide: each row says which others have it
        others = [d for d in clashes.get((r["kind"], r["name"]), []) if d != r["distribution"]]
        r["also_in"] = ", ".join(others)
    rows.sort(key=lambda r: (r["kind"], r["name"], r["distribution"]))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    columns = ("kind", "name", "distribution", "version", "status")
    if any(r["also_in"] for r in rows):
        columns += ("also_in",)
    if not interactive():  # scripts and pipes: aligned plain columns, no rich import
        typer.echo(plain_table(columns, [[r[c] for c in columns] for r in rows]))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(*columns)
    for r in rows:
        status = r["status"] if r["status"] == "ok" else f"[red]{r['status']}[/red]"
        table.add_row(r["kind"], r["name"], r["distribution"], r["version"], status,
                      *([f"[yellow]{r['also_in']}[/yellow]"] if "also_in" in columns else []))
    Console().print(table)


@app.command()
@friendly
def info(name: str = typer.Argument(..., help="Component name or distribution:name."),
         kind: Optional[str] = typer.Option(None, "--kind", help="Kind, when the name exists in several kinds."),
         as_json: bool = typer.Option(False, "--json")) -> None:
    """Describe one component: where it comes from, its docstring and its arguments."""
    from .describe import describe_component

    doc = describe_component(name, kind)
    if as_json:
        typer.echo(json.dumps(doc, indent=2, default=str))
        return
    typer.echo(f"{doc['kind']} '{doc['name']}' from {doc['distribution']} {doc['version']} ({doc['target']})")
    if doc.get("doc"):
        typer.echo("\n" + doc["doc"] + "\n")
    for a in doc.get("arguments", []):
        req = " (required)" if a["required"] else f" = {a['default']!r}"
        typer.echo(f"  {a['name']}: {a['type']}{req}")


# --------------------------------------------------------------------------------------------- build
@app.command()
@friendly
def build(
    preset: Optional[str] = typer.Option(None, "--preset", help="Start from a model preset."),
    encoder: Optional[List[str]] = typer.Option(None, "--encoder", help="Encoder (repeat for several)."),
    fusion: Optional[List[str]] = typer.Option(None, "--fusion", help="Fusion module (repeat, in order)."),
    connector: Optional[str] = typer.Option(None, "--connector", help="Final projector (default mlp2x_gelu)."),
    llm: Optional[str] = typer.Option(None, "--llm", help="LLM name, local folder or hub id (default tiny-llama)."),
    objective: Optional[List[str]] = typer.Option(None, "--objective", help="Extra objective (lm is always on)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="part.arg=value (YAML value), e.g. encoder.feature_layer=-1"),
    config: Optional[Path] = typer.Option(None, "--config", help="Model config YAML."),
    meta: bool = typer.Option(False, "--meta", help="Build on the meta device: exact counts, no memory."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write a loadable checkpoint here."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Assemble a model from plugins and print its summary."""
    from .model_config import resolve_model_config

    cfg = resolve_model_config(preset=preset, config=config, encoders=encoder, fusion=fusion, connector=connector,
                               llm=llm, objectives=objective, sets=set_)
    from vlmkit.assembly import build_model

    model = build_model(cfg, meta=meta)
    summary = model.summary()
    summary["config"] = cfg.to_dict()
    if out is not None:
        if meta:
            fail("--out needs real weights; drop --meta to write a checkpoint")
        from vlmkit.checkpoint import save_checkpoint

        save_checkpoint(model, out)
        summary["checkpoint"] = str(out)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
    else:
        from .render import print_summary

        print_summary(summary, meta=meta)


# --------------------------------------------------------------------------------------------- conversion
@app.command("import-hf")
@friendly
def import_hf(src: Path = typer.Argument(..., help="HF Llava checkpoint folder."),
              out: Path = typer.Argument(..., help="vlmkit checkpoint folder to write.")) -> None:
    """Convert a transformers Llava checkpoint into a vlmkit checkpoint."""
    from vlmkit.hf_llava import import_hf as run

    path = run(src, out)
    typer.echo(f"wrote vlmkit checkpoint {path}")


@app.command("export-hf")
@friendly
def export_hf(model: Path = typer.Argument(..., help="vlmkit checkpoint folder."),
              out: Path = typer.Argument(..., help="HF Llava folder to write.")) -> None:
    """Convert a vlmkit checkpoint into a transformers Llava folder, where it can be expressed as one."""
    from vlmkit.hf_llava import export_hf as run

    path = run(model, out)
    typer.echo(f"wrote HF Llava checkpoint {path}")
