"""``vlmkit data``: look at, convert and check training data (preview | convert | check).

Each command imports what it needs when it runs (torch only where a transform or dataset needs it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Optional

import typer

from .app import app
from .errors import fail, friendly
from .siblings import require_module

data_app = typer.Typer(no_args_is_help=True, help="Preview, convert and check training data.")
app.add_typer(data_app, name="data")

CONVERT_FORMATS = ("densefusion",)


def transform_spec(text: str) -> Any:
    """``vip`` or a YAML/JSON mapping ``{name: vip, args: {alpha: 128}}``."""
    text = text.strip()
    if text.startswith("{"):
        import yaml

        try:
            from vlmkit import safe_yaml

            spec = safe_yaml.load(text, f"--transform {text[:40]!r}")
        except yaml.YAMLError as exc:
            fail(f"--transform {text!r}: not a YAML mapping ({exc})")
        if not isinstance(spec, dict) or "name" not in spec:
            fail(f"--transform {text!r}: expected a name or {{name: ..., args: {{...}}}}")
        return spec
    return text


@data_app.command("preview")
@friendly
def preview_cmd(
    file: Path = typer.Argument(..., help="Data file (LLaVA JSON/JSONL, DenseFusion JSONL...)."),
    images: Optional[Path] = typer.Option(None, "--images", help="Image root (default: the data file's folder)."),
    dataset: str = typer.Option("llava-json", "--dataset", help="Dataset component that reads FILE."),
    transform: Optional[List[str]] = typer.Option(None, "--transform",
                                                  help="Transform to apply, in order (repeat): a name such as vip, "
                                                       "or '{name: vip, args: {alpha: 128}}'."),
    n: int = typer.Option(16, "--n", min=1, help="How many samples."),
    out: Path = typer.Option(Path("preview.png"), "--out", "-o", help="PNG file to write."),
    seed: int = typer.Option(0, "--seed", help="Seed of the transforms' random streams (and of --shuffle)."),
    shuffle: bool = typer.Option(False, "--shuffle", help="Random records instead of the first N."),
    cell: int = typer.Option(320, "--cell", min=64, help="Cell width in pixels."),
    cols: Optional[int] = typer.Option(None, "--cols", min=1, help="Columns (default: a square grid)."),
    text_lines: int = typer.Option(10, "--text-lines", min=1, help="Lines of text under each image."),
    as_json: bool = typer.Option(False, "--json", help="Print what was shown as JSON."),
    boxes: Optional[Path] = typer.Option(None, "--boxes", help="MG-LLaVA box file to draw (joined by record id)."),
) -> None:
    """Draw a grid of samples (after transforms, prompts drawn in) with their conversation below each."""
    require_module("vlmkit-data", "vlmkit data preview")
    from vlmkit_data.preview import preview

    specs = [transform_spec(t) for t in transform or []]
    res = preview(str(file), str(out), image_root=str(images) if images else None, dataset=dataset, transforms=specs,
                  n=n, seed=seed, shuffle=shuffle, cell=cell, cols=cols, text_lines=text_lines,
                  box_file=str(boxes) if boxes else None)
    if as_json:
        typer.echo(json.dumps(res, indent=2))
        return
    typer.echo(f"wrote {out} ({res['size'][0]}x{res['size'][1]}): {len(res['shown'])} of {res['records']:,} samples"
               + (f", {len(res['errors'])} could not be read" if res["errors"] else ""))


@data_app.command("boxes")
@friendly
def boxes_cmd(
    file: Path = typer.Argument(..., help="LLaVA JSON/JSONL data file."),
    out: Path = typer.Option(..., "--out", "-o", help="Box file to write (JSON lines; resumed if it exists)."),
    detector: str = typer.Option(..., "--detector", help="OWLv2 / OWL-ViT folder or hub id, e.g. "
                                                         "google/owlv2-large-patch14-ensemble (MG-LLaVA's)."),
    tags: Optional[str] = typer.Option(None, "--tags", help="Tag vocabulary for every image: 'cat,dog,car'."),
    tags_file: Optional[Path] = typer.Option(None, "--tags-file", help="Tag vocabulary, one tag per line."),
    tags_field: Optional[str] = typer.Option(None, "--tags-field", help="Record field with each image's tags "
                                                                       "(e.g. from RAM++)."),
    images: Optional[Path] = typer.Option(None, "--images", help="Image root (default: the data file's folder)."),
    threshold: float = typer.Option(0.2, "--threshold", help="Score threshold (MG-LLaVA: 0.2)."),
    iou: float = typer.Option(0.2, "--iou", help="Per-label NMS IoU (MG-LLaVA: 0.2)."),
    limit: int = typer.Option(100, "--limit", help="Above this many boxes keep the top 20 per label (MG-LLaVA)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Images per detector call."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda (default: cuda when there is one)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Detect objects in every image with an open-vocabulary detector and write an MG-LLaVA box file
    (resumable; images that fail are named in OUT.errors.jsonl)."""
    require_module("vlmkit-data", "vlmkit data boxes")
    from vlmkit_data.box_detection import detect_boxes, errors_path

    vocabulary = None
    if tags is not None or tags_file is not None:
        vocabulary = [t.strip() for t in (tags or "").split(",") if t.strip()]
        if tags_file is not None:
            vocabulary += [t.strip() for t in tags_file.read_text().splitlines() if t.strip()]
    report = detect_boxes(file, out, detector, image_root=str(images) if images else None, tags=vocabulary,
                          tags_field=tags_field, threshold=threshold, iou=iou, limit=limit, batch_size=batch_size,
                          device=device)
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
        return
    typer.echo(f"wrote {out}: {report.written:,} records now ({report.boxes:,} boxes), {report.resumed:,} already "
               f"done, {report.without_image:,} without an image; {report.total_records:,} records in the file")
    if report.zero_area:
        typer.echo(f"{report.zero_area:,} box(es) lay wholly in the detector's padding (no area inside the image) "
                   "and were dropped")
    if report.total_failed:
        earlier = report.total_failed - len(report.failed)
        typer.echo(f"{report.total_failed:,} record(s) failed and are not in the box file"
                   + (f" ({earlier:,} of them in earlier runs)" if earlier > 0 else "") + f" (see {errors_path(out)})"
                   + (": " + "; ".join(f"{f['id']}: {f['reason']}" for f in report.failed[:3]) if report.failed else ""),
                   err=True)


@data_app.command("convert")
@friendly
def convert_cmd(
    fmt: str = typer.Argument(..., metavar="FORMAT", help=f"Source format: {', '.join(CONVERT_FORMATS)}."),
    src: Path = typer.Argument(..., metavar="IN", help="Source file."),
    dst: Path = typer.Argument(..., metavar="OUT", help="LLaVA JSONL file to write."),
    images: Path = typer.Option(..., "--images", help="Folder holding the images ({image_id}.png, .jpg...)."),
    report: Optional[Path] = typer.Option(None, "--report", help="Where to list records without an image "
                                                                 "(default: OUT.missing.jsonl)."),
    relative: bool = typer.Option(False, "--relative", help="Write image paths relative to --images "
                                                            "(then load with image_root=--images)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Convert a dataset's own format to LLaVA JSONL; records whose image is missing are listed, not dropped."""
    if fmt not in CONVERT_FORMATS:
        fail(f"unknown format '{fmt}'; formats: {', '.join(CONVERT_FORMATS)}")
    require_module("vlmkit-data", "vlmkit data convert")
    from vlmkit_data.densefusion import convert_densefusion

    res = convert_densefusion(str(src), str(dst), str(images), report=str(report) if report else None,
                              relative=relative)
    if as_json:
        typer.echo(json.dumps(res.as_dict(), indent=2))
        return
    typer.echo(f"wrote {res.written:,} records to {res.output} (load with image_root={images}: image paths must stay "
               "under the image root)")
    if res.refused:
        typer.echo(f"{res.refused:,} records name an image outside {images} and were refused; listed in {res.report}",
                   err=True)
    if res.missing:
        typer.echo(f"{res.missing:,} records have no image under {images}; listed in {res.report}", err=True)
        for line, image_id in res.first_missing[:5]:
            typer.echo(f"  {src}:{line}: image_id={image_id}", err=True)


def _processor(model: Optional[Path], preset: Optional[str], recipe: Optional[Path], stage: Optional[str],
               template: Optional[str], max_length: Optional[int]):
    """The processor training would use, and what it is: a checkpoint's, a preset's, or a recipe stage's (its
    model, template and max_length; built on the meta device: no weights)."""
    from vlmkit.data.processing import MultimodalProcessor
    from vlmkit.model.assembly import build_model

    if sum(x is not None for x in (model, preset, recipe)) > 1:
        fail("give one of --recipe, --model and --preset")
    if stage is not None and recipe is None:
        fail("--stage names a stage of --recipe")
    if model is not None:
        from vlmkit.model.checkpoint import load_checkpoint

        built, what = load_checkpoint(model, meta=True), f"checkpoint {model}"
    elif recipe is not None:
        from vlmkit.training.recipe import load_recipe

        r = load_recipe(str(recipe))
        names = [s.name for s in r.stages]
        by_number = {str(i + 1): i for i in range(len(names))}
        pick = 0 if stage is None else {**by_number, **{n: i for i, n in enumerate(names)}}.get(stage, -1)
        if pick < 0:
            fail(f"--stage {stage}: {recipe} has the stages {', '.join(names)} (a name, or 1 to {len(names)})")
        st = r.stages[pick]
        if r.init_from and pick == 0:
            from vlmkit.model.checkpoint import load_checkpoint

            built = load_checkpoint(r.init_from, meta=True)
        else:
            built = build_model(r.model, meta=True)
        template = template or (st.data.template if isinstance(st.data.template, str) else None)
        max_length = max_length or st.max_length
        what = f"recipe {recipe}, stage '{st.name}'"
    else:
        from .model_config import resolve_model_config

        built, what = build_model(resolve_model_config(preset=preset), meta=True), f"preset {preset}"
    processor = MultimodalProcessor.for_model(built, template=template, max_length=max_length)
    return processor, f"{what} (max_length {processor.max_length})"


#: recipe discovery reads at most this many YAML files of at most this size (a folder of big YAML is not a scan)
_RECIPE_SCAN_FILES, _RECIPE_SCAN_BYTES = 64, 1 << 20


def recipes_training_on(data_file: Path) -> list[tuple[Path, str]]:
    """(recipe, stage name) for every recipe YAML beside ``data_file`` or in the working folder whose stage reads
    that file: the tokenizer that file will be trained with, without being told. A stage's dataset argument
    names the file relative to the working folder (as ``vlmkit train`` reads it) or to the recipe's folder."""
    from vlmkit import safe_yaml

    target = data_file.resolve()
    folders = list(dict.fromkeys([data_file.resolve().parent, Path.cwd().resolve()]))
    found: list[tuple[Path, str]] = []
    for folder in folders:
        candidates = sorted(p for ext in ("*.yaml", "*.yml") for p in folder.glob(ext))[:_RECIPE_SCAN_FILES]
        for path in candidates:
            try:
                if path.stat().st_size > _RECIPE_SCAN_BYTES:
                    continue
                doc = safe_yaml.load(path.read_text(encoding="utf-8"), str(path))
            except Exception:  # noqa: BLE001 - not a readable YAML file: not a recipe, so not a candidate
                continue
            stages = doc.get("stages") if isinstance(doc, dict) else None
            for st in stages if isinstance(stages, list) else []:
                data = st.get("data") if isinstance(st, dict) else None
                args = data.get("args") if isinstance(data, dict) else None
                for value in (args or {}).values() if isinstance(args, dict) else ():
                    if isinstance(value, str) and value and any(
                            (base / value).resolve() == target for base in (Path.cwd(), path.parent)):
                        found.append((path, str(st.get("name", "")) or str(stages.index(st) + 1)))
                        break
    return list(dict.fromkeys(found))


def _default_judge(file: Path, template: Optional[str], max_length: Optional[int]
                   ) -> tuple[Any, Optional[str], Optional[str]]:
    """(processor, what it is, why not) when no --recipe/--model/--preset is given: a recipe found training on
    FILE, else the default model's tokenizer, template and max_length. Any failure to build one is a reason said
    in the report, not an error: the record checks stand on their own."""
    from vlmkit.errors import VlmkitError

    found = recipes_training_on(file)
    try:
        if found:
            recipe, stage = found[0]
            processor, what = _processor(None, None, recipe, stage, template, max_length)
            others = f"; also trained on by {', '.join(f'{r.name}:{s}' for r, s in found[1:])}" if found[1:] else ""
            return processor, f"{what}, found training on {file.name}{others}", None
        from .model_config import DEFAULT_CONNECTOR_NEED, DEFAULT_PRESET, DEFAULT_PRESET_NEED
        from .siblings import missing_components

        missing = missing_components(DEFAULT_PRESET_NEED, DEFAULT_CONNECTOR_NEED)
        if missing:
            return None, None, ("the default model needs " + ", ".join(f"{k} '{n}' ({d})" for k, n, d in missing)
                                + f" and no recipe beside {file.name} trains on it")
        processor, what = _processor(None, DEFAULT_PRESET, None, None, template, max_length)
        return processor, f"the default model, {what} (no recipe beside {file.name} trains on it)", None
    except (VlmkitError, OSError, ValueError) as exc:
        return None, None, f"no tokenizer could be built: {exc}"


@data_app.command("check")
@friendly
def check_cmd(
    file: Path = typer.Argument(..., help="Data file to check."),
    images: Optional[Path] = typer.Option(None, "--images", help="Image root (default: the data file's folder)."),
    dataset: str = typer.Option("llava-json", "--dataset", help="Dataset component that reads FILE."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Check only the first N records."),
    show: int = typer.Option(20, "--show", min=0, help="How many problems to list."),
    meta_root: Optional[Path] = typer.Option(None, "--meta-root", help="Folder VCR meta_dir paths are relative to."),
    model: Optional[Path] = typer.Option(None, "--model", help="Also tokenise as this checkpoint would train: "
                                                               "answers past max_length, truncation."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Like --model, with a model preset's tokenizer, "
                                                                "template and max_length."),
    recipe: Optional[Path] = typer.Option(None, "--recipe", help="Like --model, with what a recipe's stage would "
                                                                 "train with: its model, template and max_length."),
    stage: Optional[str] = typer.Option(None, "--stage", help="The --recipe stage (name or 1-based number; "
                                                              "default: the first)."),
    template: Optional[str] = typer.Option(None, "--template", help="Chat template (default: the model's)."),
    max_length: Optional[int] = typer.Option(None, "--max-length", min=1, help="Token budget (default: the model's)."),
    judge: bool = typer.Option(True, "--judge/--no-judge", help="Tokenise as training would (default: with a "
                               "recipe found training on FILE, else the default model) to find answers past "
                               "max_length and truncation; --no-judge checks records only."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress",
                                            help="Progress bar (default: on a terminal)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable report."),
) -> None:
    """Validate every record: JSON, images exist and decode, <image> tags match, roles alternate, boxes inside
    the image. Exits 1 when any problem is found."""
    import sys

    require_module("vlmkit-data", "vlmkit data check")
    from vlmkit_data.check import check_file, format_report

    show_progress = (sys.stderr.isatty() and not as_json) if progress is None else progress
    processor, judged_with, why_not = None, None, None
    if model is not None or preset is not None or recipe is not None:
        if not judge:
            fail("--no-judge with --recipe, --model or --preset: drop one")
        processor, judged_with = _processor(model, preset, recipe, stage, template, max_length)
    elif stage is not None:
        fail("--stage names a stage of --recipe")
    elif not judge:
        why_not = "--no-judge"
    elif file.is_file():
        processor, judged_with, why_not = _default_judge(file, template, max_length)
    report = check_file(str(file), image_root=str(images) if images else None, dataset=dataset, limit=limit,
                        max_examples=show, progress=show_progress, meta_root=str(meta_root) if meta_root else None,
                        processor=processor, judged_with=judged_with, not_judged_because=why_not)
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        typer.echo(format_report(report))
    if not report.ok:
        raise typer.Exit(1)
