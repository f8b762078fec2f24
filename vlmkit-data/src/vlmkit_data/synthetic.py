"""Synthetic shapes: a procedurally generated VQA dataset for the embedded demo and for tests.

Written as ordinary LLaVA JSONL plus PNG files, so it goes through the same loader as real data.

Design (so a ~0.6M-parameter model, a stride-16 conv encoder on 64 px plus a 2-layer LLM, learns it in
minutes on a CPU):

* the image is a grid of ``cell_size`` cells (16 px: 4x4 cells at 64 px, one cell per tiny-conv token);
  each of 1-3 shapes lies inside its own cell and fills 80 % of its side, so one visual token sees one
  whole shape and nothing else (a shape cut across tokens has to be put together by the LLM, which a
  2-layer model learns far more slowly);
* 6 saturated colours on white and 4 very different shapes (circle, square, triangle, cross); within
  one image all colours differ and all shapes differ, so "the circle" or "the red object" names one
  object;
* position is asked per axis, so the answer is never ambiguous: "Is the red circle on the left or
  right?" / "... at the top or bottom?" (with an even number of cells a side, every cell is in one half);
* count is asked about images with 1-3 shapes ("How many shapes are there?"); colour, shape and
  position are asked about images with one shape, unless ``distractors=True``. Why: with distractors
  the answer needs a lookup ("find the red token, read its shape") that a 2-layer LLM of width 128
  learns slowly and unreliably (measured: shape stuck at chance after 4,000 steps of batch 64 in one
  run, 90 % after 1,500 in another), while single-shape questions are learned in a few hundred steps
  each (see the package README for whole-dataset runs).
  The question still names the shape ("the circle", "the red object"), so the distractor-free data
  and the harder variant read the same.

Every answer is one word and one token of the tiny tokenizer. Each record has ``category``
(color/shape/position/count) and ``answer`` for exact-match evaluation per category, ``boxes``
(per image, original pixels) and ``objects`` (colour, shape, box of each shape). Generation is
deterministic given the seed; the test split uses its own random stream, so it does not change with
``n_train``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Literal

from PIL import Image, ImageDraw

from vlmkit.errors import ConfigError
from vlmkit.progress import ProgressCallback

from .llava_json import LlavaJsonDataset

#: bump when the generator's output changes (invalidates generated folders)
GENERATOR_VERSION = 2
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 225),
    "yellow": (240, 210, 20),
    "purple": (140, 50, 190),
    "orange": (250, 130, 20),
}
SHAPES = ("circle", "square", "triangle", "cross")
CATEGORIES = ("color", "shape", "position", "count")
#: ``style``: a question per image (the default), or a dense caption of every object per image
STYLES = ("vqa", "dense-caption")
CAPTION_PROMPT = "Describe every object in the image."
COUNT_WORDS = ("zero", "one", "two", "three", "four")
BACKGROUND = (255, 255, 255)
#: every shape has the same size (this fraction of its cell, 13 px at 16 px cells); only its place in
#: the cell varies (by up to 2 px), so a shape differs from another by its outline alone
SHAPE_FILL = 0.8
MAX_SHAPES = 3
#: each split's own random stream (every generator offsets its seed by it)
SPLIT_STREAM = {"train": 1, "test": 2}


def answer_vocabulary() -> list[str]:
    """Every answer the generator can produce (each must be a single token of the tiny tokenizer)."""
    return [*COLORS, *SHAPES, "left", "right", "top", "bottom", *COUNT_WORDS[1:MAX_SHAPES + 1]]


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], color: tuple[int, int, int]):
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=color)
    elif shape == "square":
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=color)
    elif shape == "triangle":
        draw.polygon([((x0 + x1 - 1) / 2, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=color)
    elif shape == "cross":
        t = (x1 - x0) // 3
        draw.rectangle((x0 + t, y0, x1 - 1 - t, y1 - 1), fill=color)
        draw.rectangle((x0, y0 + t, x1 - 1, y1 - 1 - t), fill=color)
    else:  # pragma: no cover - SHAPES is closed
        raise ValueError(shape)


def _scene(rng: random.Random, image_size: int, cell: int, n: int) -> list[dict[str, Any]]:
    """``n`` objects, each inside its own cell of the grid, with distinct colours and distinct shapes."""
    side = image_size // cell
    cells = rng.sample(range(side * side), n)
    colors = rng.sample(list(COLORS), n)
    shapes = rng.sample(SHAPES, n)
    objects = []
    for c, color, shape in zip(cells, colors, shapes):
        row, col = divmod(c, side)
        size = round(cell * SHAPE_FILL)
        slack = cell - size  # the shape stays inside its cell, >= 1 px from the edges when it can
        x0 = col * cell + rng.randint(min(1, slack), max(min(1, slack), slack - 1))
        y0 = row * cell + rng.randint(min(1, slack), max(min(1, slack), slack - 1))
        objects.append({"color": color, "shape": shape, "box": [x0, y0, x0 + size, y0 + size],
                        "horizontal": "left" if col < side / 2 else "right",
                        "vertical": "top" if row < side / 2 else "bottom"})
    return objects


def _question(rng: random.Random, category: str, objects: list[dict[str, Any]]) -> tuple[str, str]:
    target = rng.choice(objects)
    if category == "color":
        return f"What color is the {target['shape']}?", target["color"]
    if category == "shape":
        return f"What shape is the {target['color']} object?", target["shape"]
    if category == "position":
        name = f"{target['color']} {target['shape']}"
        if rng.random() < 0.5:
            return f"Is the {name} on the left or right?", target["horizontal"]
        return f"Is the {name} at the top or bottom?", target["vertical"]
    return "How many shapes are there?", COUNT_WORDS[len(objects)]


def dense_caption(objects: list[dict[str, Any]], cell: int) -> str:
    """Every object with all its attributes, in reading order (row by row): "two shapes. red circle top
    left. blue square bottom right." A DenseFusion-style caption in the generator's own words, each one
    token of the tiny tokenizer, so a caption stage teaches exactly what the questions ask about."""
    def reading_order(o: dict[str, Any]) -> tuple[int, int]:
        return o["box"][1] // cell, o["box"][0] // cell

    parts = [f"{COUNT_WORDS[len(objects)]} shape{'s' if len(objects) > 1 else ''}."]
    parts += [f"{o['color']} {o['shape']} {o['vertical']} {o['horizontal']}." for o in sorted(objects, key=reading_order)]
    return " ".join(parts)


def _write_split(out: Path, split: str, n: int, seed: int, image_size: int, cell: int, distractors: bool,
                 style: str = "vqa") -> Path:
    rng = random.Random(seed * 1_000_003 + SPLIT_STREAM[split])
    img_dir = out / "images" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    path = out / f"{split}.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            category = CATEGORIES[i % len(CATEGORIES)] if style == "vqa" else "caption"  # cycling: balanced
            many = category in ("count", "caption") or distractors
            objects = _scene(rng, image_size, cell, rng.randint(1, MAX_SHAPES) if many else 1)
            img = Image.new("RGB", (image_size, image_size), BACKGROUND)
            draw = ImageDraw.Draw(img)
            for o in objects:
                _draw_shape(draw, o["shape"], tuple(o["box"]), COLORS[o["color"]])
            rel = f"images/{split}/{i:06d}.png"
            img.save(out / rel, compress_level=1)
            if style == "vqa":
                question, answer = _question(rng, category, objects)
            else:
                question, answer = CAPTION_PROMPT, dense_caption(objects, cell)
            rec = {
                "id": f"shapes-{split}-{i:06d}",
                "image": rel,
                "conversations": [{"from": "human", "value": f"<image>\n{question}"},
                                  {"from": "gpt", "value": answer}],
                "category": category,
                "answer": answer,
                "boxes": [[o["box"] for o in objects]],
                "objects": [{"color": o["color"], "shape": o["shape"], "box": o["box"]} for o in objects],
            }
            f.write(json.dumps(rec) + "\n")
    return path


def generate_shapes(out_dir: str | os.PathLike, n_train: int = 5000, n_test: int = 500, seed: int = 0,
                    image_size: int = 64, cell_size: int = 16, distractors: bool = False,
                    style: str = "vqa") -> dict[str, str]:
    """Write ``train.jsonl``, ``test.jsonl`` and ``images/{train,test}/*.png`` under ``out_dir``.

    One record (one image, one question) per sample; categories cycle color/shape/position/count.
    Count images hold 1-3 shapes. Colour, shape and position questions come with a single shape unless
    ``distractors`` is set, in which case they too get 1-3 shapes and the model must find the named one
    (see the module docstring for why that is off by default).

    Returns ``{"root", "train", "test", "images"}`` paths. ``image_size / cell_size`` must be an even
    number of cells per side (so every cell is in the left or right half, the top or bottom half); match
    ``cell_size`` to the encoder's patch (16 for tiny-conv) so each shape lies in one visual token.

    ``style="dense-caption"``: each image (1-3 shapes) comes with :func:`dense_caption` as the answer to
    :data:`CAPTION_PROMPT` instead of a question (category ``caption``), for a DenseFusion-style caption
    stage before instruction tuning.
    """
    if style not in STYLES:
        raise ConfigError(f"synthetic shapes: style must be one of {', '.join(STYLES)}, got {style!r}")
    side, rest = divmod(image_size, cell_size)
    if cell_size < 8 or rest or side < 2 or side % 2:
        raise ConfigError(f"synthetic shapes: image_size ({image_size}) must be an even multiple of cell_size "
                          f"({cell_size} >= 8)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train = _write_split(out, "train", n_train, seed, image_size, cell_size, distractors, style)
    test = _write_split(out, "test", n_test, seed, image_size, cell_size, distractors, style)
    manifest = {"generator": "synthetic-shapes", "version": GENERATOR_VERSION, "n_train": n_train, "n_test": n_test,
                "seed": seed, "image_size": image_size, "cell_size": cell_size, "distractors": distractors,
                **({"style": style} if style != "vqa" else {}),
                "categories": list(CATEGORIES) if style == "vqa" else ["caption"],
                "answers": answer_vocabulary()}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return {"root": str(out), "train": str(train), "test": str(test), "images": str(out / "images")}


def default_cache_dir() -> Path:
    base = os.environ.get("VLMKIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "vlmkit")
    return Path(base) / "synthetic-shapes"


def ensure_shapes(root: str | os.PathLike | None = None, n_train: int = 5000, n_test: int = 500, seed: int = 0,
                  image_size: int = 64, cell_size: int = 16, distractors: bool = False,
                  style: str = "vqa") -> dict[str, str]:
    """Generate once into ``root/<parameters>`` (default: the vlmkit cache) and reuse it afterwards."""
    folder = Path(root) if root is not None else default_cache_dir()
    name = (f"v{GENERATOR_VERSION}-seed{seed}-train{n_train}-test{n_test}-{image_size}px-cell{cell_size}"
            + ("-distractors" if distractors else "") + (f"-{style}" if style != "vqa" else ""))
    return generate_once(folder, name, lambda tmp: generate_shapes(
        tmp, n_train=n_train, n_test=n_test, seed=seed, image_size=image_size, cell_size=cell_size,
        distractors=distractors, style=style))


def write_splits(out_dir: str | os.PathLike, write_split: Any, manifest: dict[str, Any], n_train: int, n_test: int,
                 seed: int, image_size: int) -> dict[str, str]:
    """The generators' common last step: both splits through ``write_split(out, split, n, seed, image_size)``,
    then ``manifest.json`` (``manifest`` plus the sizes and seed). Returns ``{"root", "train", "test",
    "images"}``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train = write_split(out, "train", n_train, seed, image_size)
    test = write_split(out, "test", n_test, seed, image_size)
    (out / "manifest.json").write_text(json.dumps({
        **manifest, "n_train": n_train, "n_test": n_test, "seed": seed, "image_size": image_size}, indent=2) + "\n")
    return {"root": str(out), "train": str(train), "test": str(test), "images": str(out / "images")}


def generate_once(folder: Path, name: str, generate: Any) -> dict[str, str]:
    """``folder/name`` generated by ``generate(tmp)`` unless it is there already (its ``manifest.json``).

    Generation goes to a temporary sibling folder renamed into place, so concurrent processes (ranks)
    never see a half-written dataset."""
    target = folder / name
    paths = {"root": str(target), "train": str(target / "train.jsonl"), "test": str(target / "test.jsonl"),
             "images": str(target / "images")}
    if (target / "manifest.json").is_file():
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{target.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    generate(tmp)
    try:
        os.rename(tmp, target)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "manifest.json").is_file():
            raise
    return paths


def open_generated(dataset: LlavaJsonDataset, generator: str, root: str | None, split: str, name: str,
                   generate: Any, boxes: bool, progress: bool | None, progress_callback: ProgressCallback | None) -> None:
    """Initialise ``dataset`` (a ``LlavaJsonDataset`` subclass) on ``split`` of the task ``generator``,
    generated once by ``generate(tmp)`` into ``root/name`` (default root: the vlmkit cache)."""
    if split not in SPLIT_STREAM:
        raise ConfigError(f"{generator}: split must be one of {', '.join(SPLIT_STREAM)}, got {split!r}")
    folder = Path(root) if root is not None else default_cache_dir().parent / generator
    dataset.paths = generate_once(folder, name, generate)
    dataset.split = split
    LlavaJsonDataset.__init__(dataset, dataset.paths[split], boxes=boxes, regions=False, index_cache=False,
                              progress=progress, progress_callback=progress_callback)


class SyntheticShapesDataset(LlavaJsonDataset):
    """The ``synthetic-shapes`` dataset: generated on first use, then read through ``LlavaJsonDataset``."""

    def __init__(self, root: str | None = None, split: Literal["train", "test"] = "train", n_train: int = 5000,
                 n_test: int = 500, seed: int = 0, image_size: int = 64, cell_size: int = 16,
                 distractors: bool = False, style: Literal["vqa", "dense-caption"] = "vqa",
                 progress: bool | None = None, progress_callback: ProgressCallback | None = None):
        if split not in SPLIT_STREAM:
            raise ConfigError(f"synthetic-shapes: split must be one of {', '.join(SPLIT_STREAM)}, got {split!r}")
        self.paths = ensure_shapes(root, n_train=n_train, n_test=n_test, seed=seed, image_size=image_size,
                                   cell_size=cell_size, distractors=distractors, style=style)
        self.split = split
        super().__init__(self.paths[split], boxes=True, regions=False, index_cache=False, progress=progress,
                         progress_callback=progress_callback)
