"""Synthetic clutter: one small coloured object among small grey ones, for MG-LLaVA's claim.

MG-LLaVA claims that object tokens (RoI features pooled from a high-resolution map inside detected boxes)
and a high-resolution stream fused into the low-resolution tokens (Conv-Gate) help with small objects among
clutter. This task makes a small object's shape the question and puts it among distractors:

* 128 px images, a grid of 16 px cells (8x8); every object is ``OBJECT_SIZE`` px (8) inside its own cell,
  so at the low-resolution stream's 64 px an object is 4 px and its outline is mostly gone, while a 128 px
  stream sees it at full size;
* ``CLUTTER`` grey objects (6 to 10, random shapes) and one **target** in one of the six saturated colours;
  "the colored object" names it without a lookup by attribute (a 2-layer LLM learns those slowly; see
  synthetic-shapes);
* questions cycle over **shape** ("What shape is the colored object?": the small detail), and two controls
  that the low resolution answers, **color** and **position** (left or right);
* every record carries the boxes of all objects, target and clutter alike, in reading order, as a detector
  would give them, and ``objects`` (shape, colour, box, whether it is the target).

Written as LLaVA JSONL plus PNG files (read by ``LlavaJsonDataset`` with boxes), generated once into the
vlmkit cache, deterministic given the seed; the test split has its own random stream. Every answer is one
token of the tiny tokenizer.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Literal

from PIL import Image, ImageDraw

from vlmkit.errors import ConfigError
from vlmkit.progress import ProgressCallback

from .llava_json import LlavaJsonDataset
from .synthetic import BACKGROUND, COLORS, SHAPES, SPLIT_STREAM, _draw_shape, open_generated, write_splits

#: bump when the generator's output changes (invalidates generated folders)
GENERATOR_VERSION = 1
CATEGORIES = ("shape", "color", "position")
CELL = 16
OBJECT_SIZE = 8
#: how many grey distractors an image holds (inclusive)
CLUTTER = (6, 10)
GREY = (150, 150, 150)


def _write_split(out: Path, split: str, n: int, seed: int, image_size: int, cell: int = CELL,
                 clutter: tuple[int, int] = CLUTTER, size: int = OBJECT_SIZE) -> Path:
    rng = random.Random(seed * 1_000_003 + SPLIT_STREAM[split])
    img_dir = out / "images" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    side = image_size // cell
    path = out / f"{split}.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            category = CATEGORIES[i % len(CATEGORIES)]
            cells = rng.sample(range(side * side), 1 + rng.randint(*clutter))
            color = rng.choice(list(COLORS))
            objects = []
            for k, c in enumerate(cells):
                row, col = divmod(c, side)
                x0 = col * cell + rng.randint(1, cell - size - 1)
                y0 = row * cell + rng.randint(1, cell - size - 1)
                objects.append({"shape": rng.choice(SHAPES), "color": color if k == 0 else "gray",
                                "box": [x0, y0, x0 + size, y0 + size], "target": k == 0})
            target = objects[0]
            objects.sort(key=lambda o: (o["box"][1] // cell, o["box"][0] // cell))  # reading order, as boxes come
            img = Image.new("RGB", (image_size, image_size), BACKGROUND)
            draw = ImageDraw.Draw(img)
            for o in objects:
                _draw_shape(draw, o["shape"], tuple(o["box"]), COLORS[o["color"]] if o["target"] else GREY)
            rel = f"images/{split}/{i:06d}.png"
            img.save(out / rel, compress_level=1)
            if category == "shape":
                question, answer = "What shape is the colored object?", target["shape"]
            elif category == "color":
                question, answer = "What color is the colored object?", target["color"]
            else:
                cx = (target["box"][0] + target["box"][2]) / 2
                question, answer = "Is the colored object on the left or right?", \
                    "left" if cx < image_size / 2 else "right"
            f.write(json.dumps({
                "id": f"clutter-{split}-{i:06d}", "image": rel, "category": category, "answer": answer,
                "conversations": [{"from": "human", "value": f"<image>\n{question}"},
                                  {"from": "gpt", "value": answer}],
                "boxes": [[o["box"] for o in objects]], "objects": objects}) + "\n")
    return path


def clutter_range(clutter: object) -> tuple[int, int]:
    """``clutter`` as ``(lo, hi)``: two whole numbers, 0 <= lo <= hi (a recipe gives a list)."""
    ok = (isinstance(clutter, (list, tuple)) and len(clutter) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) for v in clutter) and 0 <= clutter[0] <= clutter[1])
    if not ok:
        raise ConfigError(f"synthetic-clutter: clutter must be a range [lo, hi] of grey objects per image, two whole "
                          f"numbers with 0 <= lo <= hi, got {clutter!r:.80}")
    return int(clutter[0]), int(clutter[1])


def check_arguments(image_size: object, cell: object, clutter: object, object_size: object) -> tuple[int, int]:
    """Refuse a grid that cannot be drawn, before a cached folder is named or reused; returns ``clutter``."""
    for name, value in (("image_size", image_size), ("cell", cell), ("object_size", object_size)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"synthetic-clutter: {name} must be a whole number of pixels, got {value!r:.40}")
    lo, hi = clutter_range(clutter)
    side, rest = divmod(image_size, cell) if cell > 0 else (0, 1)
    if object_size < 2 or cell < object_size + 2 or rest or side < 2 or side % 2:
        raise ConfigError(f"synthetic-clutter: image_size ({image_size}) must be an even multiple of cell "
                          f"({cell}), at least {2 * cell}, and cell at least object_size + 2 ({object_size + 2})")
    if side * side < 1 + hi:
        raise ConfigError(f"synthetic-clutter: clutter {[lo, hi]} does not fit, with the target, in the "
                          f"{side * side} cells of a {image_size} px image")
    return lo, hi


def generate_clutter(out_dir: str | os.PathLike, n_train: int = 6000, n_test: int = 300, seed: int = 0,
                     image_size: int = 128, cell: int = CELL, clutter: tuple[int, int] | list[int] = CLUTTER,
                     object_size: int = OBJECT_SIZE) -> dict[str, str]:
    """Write ``train.jsonl``, ``test.jsonl`` and ``images/{train,test}/*.png`` under ``out_dir``.

    ``cell`` is the side of the grid cells (one object each); ``clutter`` the inclusive range of grey
    objects per image; ``object_size`` the side of every object in pixels."""
    lo, hi = check_arguments(image_size, cell, clutter, object_size)
    meta = {"generator": "synthetic-clutter", "version": GENERATOR_VERSION, "categories": list(CATEGORIES),
            "cell": cell, "clutter": [lo, hi], "object_size": object_size}
    return write_splits(out_dir, lambda o, sp, n, sd, size: _write_split(o, sp, n, sd, size, cell, (lo, hi),
                                                                         object_size),
                        meta, n_train, n_test, seed, image_size)


class SyntheticClutterDataset(LlavaJsonDataset):
    """The ``synthetic-clutter`` dataset: generated on first use (into ``root``, default the vlmkit cache),
    then read through ``LlavaJsonDataset`` with its boxes."""

    def __init__(self, root: str | None = None, split: Literal["train", "test"] = "train", n_train: int = 6000,
                 n_test: int = 300, seed: int = 0, image_size: int = 128, cell: int = CELL,
                 clutter: tuple[int, int] | list[int] = CLUTTER, object_size: int = OBJECT_SIZE,
                 progress: bool | None = None,
                 progress_callback: ProgressCallback | None = None):
        name = f"v{GENERATOR_VERSION}-seed{seed}-train{n_train}-test{n_test}-{image_size}px"
        lo, hi = check_arguments(image_size, cell, clutter, object_size)
        if (cell, (lo, hi), object_size) != (CELL, CLUTTER, OBJECT_SIZE):  # the defaults keep their old name
            name += f"-cell{cell}-clutter{lo}to{hi}-object{object_size}"
        open_generated(self, "synthetic-clutter", root, split, name, lambda tmp: generate_clutter(
            tmp, n_train=n_train, n_test=n_test, seed=seed, image_size=image_size, cell=cell, clutter=clutter,
            object_size=object_size),
            True, progress, progress_callback)
