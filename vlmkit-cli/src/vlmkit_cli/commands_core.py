"""Commands that inspect, assemble and convert models: plugins, info, build, import, export, formats."""

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
    from vlmkit.plugins.registry import GROUPS, registry
    from vlmkit.plugins.strict import strict_mode

    if kind is not None and kind != "hooks" and kind not in GROUPS:
        fail(f"unknown kind '{kind}'; kinds: {', '.join(GROUPS)}, hooks")
    if kind == "hooks":
        rows = []
    elif check:
        rows = [e.as_dict(status) for e, status in registry.check_all() if kind in (None, e.kind)]
    else:
        rows = [e.as_dict() for e in registry.entries(kind)]
    if kind in (None, "hooks"):  # hook modules: loading them imports only the plugin's hooks module
        from vlmkit.plugins.hooks import get_plugin_manager, hook_modules

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
    tiling: Optional[str] = typer.Option(None, "--tiling", help="AnyRes tiling on these pinpoints: a range of tiles "
                                         "'(1x1),...,(3x3)' or HEIGHTxWIDTH px list '336x672,672x336'; "
                                         "--set tiling.merge=flat|spatial|spatial_unpad, tiling.anyres_max=N."),
    image_size: Optional[List[str]] = typer.Option(None, "--image-size", help="Report the visual tokens of an "
                                                   "image of WIDTHxHEIGHT px (repeat for several)."),
) -> None:
    """Assemble a model from plugins and print its summary."""
    from .model_config import resolve_model_config

    sizes = [_image_size(s) for s in image_size or []]  # refused before anything is built
    cfg = resolve_model_config(preset=preset, config=config, encoders=encoder, fusion=fusion, connector=connector,
                               llm=llm, objectives=objective, sets=set_, tiling=tiling)
    from vlmkit.model.assembly import build_model

    model = build_model(cfg, meta=meta)
    summary = model.summary()
    if sizes:
        summary["visual_tokens_for"] = {f"{w}x{h}": model.visual_tokens_for_image(h, w) for w, h in sizes}
    summary["config"] = cfg.to_dict()
    if out is not None:
        if meta:
            fail("--out needs real weights; drop --meta to write a checkpoint")
        from vlmkit.model.checkpoint import save_checkpoint

        save_checkpoint(model, out)
        summary["checkpoint"] = str(out)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
    else:
        from .render import print_summary

        print_summary(summary, meta=meta)


def _image_size(text: str) -> tuple[int, int]:
    """``--image-size 1344x672``: (width, height) in px."""
    w, _, h = text.lower().partition("x")
    if not (w.isdigit() and h.isdigit()) or int(w) < 1 or int(h) < 1:
        fail(f"--image-size '{text}': expected WIDTHxHEIGHT in pixels, e.g. 1344x672")
    return int(w), int(h)


# --------------------------------------------------------------------------------------------- conversion
def _import(src: Path, out: Path, fmt: Optional[str], vision_tower: Optional[Path], tokenizer: Optional[str],
            dtype: Optional[str], sets: Optional[List[str]], aux_vision_tower: Optional[Path] = None,
            llm: Optional[Path] = None) -> None:
    import sys

    from vlmkit.interop.catalogue import import_checkpoint
    from vlmkit.interop.formats import ImportOptions
    from vlmkit.progress import ProgressReporter

    with ProgressReporter("copying tensors", 0, show=sys.stderr.isatty(), unit="tensors") as bar:
        path = import_checkpoint(src, out, format=fmt, options=ImportOptions(
            vision_tower=str(vision_tower) if vision_tower else None, tokenizer=tokenizer, dtype=dtype,
            sets=list(sets or []), progress=bar.update, aux_vision_tower=str(aux_vision_tower) if aux_vision_tower else None,
            llm=str(llm) if llm else None))
    from vlmkit.model.checkpoint import read_checkpoint_config

    doc = read_checkpoint_config(path)
    origin = doc.get("imported_from", {})
    typer.echo(f"wrote vlmkit checkpoint {path} (from {origin.get('format', fmt)})")
    computes = (doc["model"].get("llm", {}).get("args") or {}).get("dtype") or "float32"
    stored = origin.get("stored_dtype")
    typer.echo(f"the LLM computes in {computes}" + (f" (its weights are stored as {stored})" if stored else "")
               + "; --dtype float32|bfloat16|float16 on import chooses another")


@app.command("import")
@friendly
def import_(src: Path = typer.Argument(..., help="A model folder (or checkpoint file) in a format `vlmkit formats` "
                                                  "lists."),
            out: Path = typer.Argument(..., help="vlmkit checkpoint folder to write."),
            fmt: Optional[str] = typer.Option(None, "--format", help="The source format (default: detected)."),
            vision_tower: Optional[Path] = typer.Option(
                None, "--vision-tower", help="Local folder of the vision tower that the config names by hub id."),
            tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="Tokenizer folder, if SRC has none."),
            dtype: Optional[str] = typer.Option(None, "--dtype", help="LLM dtype: float32, bfloat16, float16."),
            set_: Optional[List[str]] = typer.Option(None, "--set", help="Change the built model, e.g. "
                                                     "encoder.0.resize=square or template=plain."),
            vision_tower_aux: Optional[Path] = typer.Option(
                None, "--vision-tower-aux", help="Second tower (MG-LLaVA's LAION ConvNeXt: folder or .bin/.safetensors)."),
            llm: Optional[Path] = typer.Option(None, "--llm", help="LLM folder, for releases that ship no LLM config "
                                                                  "(MG-LLaVA)."),
            ) -> None:
    """Convert another system's released model (LLaVA-1.5, ViP-LLaVA, HF Llava ...) into a vlmkit checkpoint."""
    _import(src, out, fmt, vision_tower, tokenizer, dtype, set_, vision_tower_aux, llm)


@app.command("export")
@friendly
def export(model: Path = typer.Argument(..., help="vlmkit checkpoint folder."),
           out: Path = typer.Argument(..., help="Folder to write."),
           fmt: str = typer.Option(..., "--format", help="Target format (see `vlmkit formats`)."),
           ) -> None:
    """Write a vlmkit checkpoint in another system's format, where that format can express it."""
    from vlmkit.interop.catalogue import export_checkpoint

    path = export_checkpoint(model, out, format=fmt)
    typer.echo(f"wrote {fmt} checkpoint {path}")


checkpoint_app = typer.Typer(no_args_is_help=True, help="Verify a checkpoint's files, or record their digests.")
app.add_typer(checkpoint_app, name="checkpoint")


@checkpoint_app.command("verify")
@friendly
def checkpoint_verify(folder: Path = typer.Argument(..., help="vlmkit checkpoint folder.")) -> None:
    """Check every file of a checkpoint against the SHA-256 its vlmkit.yaml records (exit 2 on a mismatch)."""
    from vlmkit.model.checkpoint import read_checkpoint_config, verify_checkpoint_files

    doc = read_checkpoint_config(folder)
    verify_checkpoint_files(folder, doc, allow=False)
    typer.echo(f"{folder}: {len(doc['files'])} file(s) match their recorded SHA-256")


@checkpoint_app.command("seal")
@friendly
def checkpoint_seal(folder: Path = typer.Argument(..., help="vlmkit checkpoint folder.")) -> None:
    """Record the SHA-256 of every file of a checkpoint written before vlmkit 0.2. Its weights must still match
    the digest it recorded; one with no digest at all is sealed only with --allow-unverified (before the command)."""
    from vlmkit.model.checkpoint import seal_checkpoint

    n = seal_checkpoint(folder)
    typer.echo(f"{folder}: recorded the SHA-256 of {n} file(s)")


@app.command("formats")
@friendly
def formats(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """The checkpoint formats installed plugins convert: import/export, detection rule, releases, parts."""
    from vlmkit.interop.catalogue import checkpoint_formats
    from vlmkit.interop.llava_repo import repo_converters

    rows = [f.summary() for f in checkpoint_formats().values()]
    convs = repo_converters()
    parts = [{"format": "llava", "part": kind, "variant": c.variant, "detection": c.detection,
              "components": list(c.components)}
             for kind, group in (("tower", convs.towers), ("projector", convs.projectors), ("module", convs.modules))
             for c in group]
    if as_json:
        typer.echo(json.dumps({"formats": rows, "llava_parts": parts}, indent=2))
        return
    typer.echo(plain_table(["format", "import", "export", "from", "detection"],
                           [[r["name"], "yes", "yes" if r["export"] else "no", r["owner"], r["detection"]]
                            for r in rows]))
    typer.echo("\nLLaVA-codebase parts (format 'llava'):")
    typer.echo(plain_table(["part", "variant", "vlmkit component", "detection"],
                           [[p["part"], p["variant"], ", ".join(p["components"]), p["detection"]] for p in parts]))


@app.command("import-hf")
@friendly
def import_hf(src: Path = typer.Argument(..., help="HF Llava checkpoint folder."),
              out: Path = typer.Argument(..., help="vlmkit checkpoint folder to write.")) -> None:
    """Alias of `vlmkit import SRC OUT --format hf-llava`."""
    _import(src, out, "hf-llava", None, None, None, None)


@app.command("export-hf")
@friendly
def export_hf(model: Path = typer.Argument(..., help="vlmkit checkpoint folder."),
              out: Path = typer.Argument(..., help="HF Llava folder to write.")) -> None:
    """Alias of `vlmkit export CKPT OUT --format hf-llava`."""
    from vlmkit.interop.catalogue import export_checkpoint

    path = export_checkpoint(model, out, format="hf-llava")
    typer.echo(f"wrote HF Llava checkpoint {path}")
