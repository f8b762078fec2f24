"""Synthetic visual prompts: several objects, one marked by a ViP-LLaVA prompt, for ViP-LLaVA's claim.

ViP-LLaVA claims that training on images with visual prompts drawn on them (a red box, an arrow, a
scribble...) lets a model answer about "the object within the red rectangle". This task makes the marked
object the only way to the answer:

* ``image_size`` px (128) images, a 2x2 grid of cells; ``n_objects`` (3) objects, each in its own cell,
  with distinct colours (the synthetic colours but red, which is the prompts') and random shapes;
* one of them is marked by a red prompt of one of ViP-LLaVA's 8 shapes, cycling over the records, drawn by
  ViP's own drawing code (``vip.drawing``: random sizes, opacity and geometry as in its training data,
  scaled by ``max(W, H) / anchor``; the default anchor, ViP's 336, keeps every prompt the same fraction
  of the image as in ViP's data: a rectangle's line is 1 to 3 px wide at 128 px);
* questions alternate "What color is the object within the red rectangle?" and "What shape is ...?";
  the record's ``category`` is the **prompt shape**, so ``vlmkit eval`` reports accuracy per prompt shape;
* ``prompts: false`` writes the same records with nothing drawn: the twin without visual-prompt data,
  whose questions name a prompt that is not there.

Written as LLaVA JSONL plus PNG files, generated once into the vlmkit cache, deterministic given the seed;
the test split has its own random stream. Every answer is one token of the tiny tokenizer.
"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

from vlmkit.errors import ConfigError
from vlmkit.progress import ProgressCallback

from .llava_json import LlavaJsonDataset
from .synthetic import BACKGROUND, COLORS, SHAPES, SPLIT_STREAM, _draw_shape, open_generated, write_splits
from .vip.drawing import ANCHOR, Region, VisualPrompt, draw_prompts, sample_alpha
from .vip.phrases import SHAPES as PROMPT_SHAPES
from .vip.phrases import phrase

#: bump when the generator's output changes (invalidates generated folders)
GENERATOR_VERSION = 1
PROMPT_COLOR = "red"
PROMPT_RGB = (255, 0, 0)
#: the objects' colours: every synthetic colour but the prompts'
OBJECT_COLORS = tuple(c for c in COLORS if c != PROMPT_COLOR)
QUESTIONS = ("color", "shape")
GRID = 2
#: the side of an object, as a fraction of its cell (the rest leaves room for the prompt around it)
OBJECT_FILL = 0.34


def outline(shape: str, box: tuple[int, int, int, int]) -> np.ndarray:
    """The polygon of a drawn synthetic shape, for the mask-like prompts (ViP draws those from polygons)."""
    x0, y0, x1, y1 = box[0], box[1], box[2] - 1, box[3] - 1
    if shape == "circle":
        cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
        pts = [(cx + r * math.cos(2 * math.pi * k / 24), cy + r * math.sin(2 * math.pi * k / 24)) for k in range(24)]
    elif shape == "square":
        pts = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    elif shape == "triangle":
        pts = [((x0 + x1) / 2, y0), (x1, y1), (x0, y1)]
    else:  # cross: the outline of the two bars
        t = (box[2] - box[0]) // 3
        a, b = x0 + t, x1 - t
        c, d = y0 + t, y1 - t
        pts = [(a, y0), (b, y0), (b, c), (x1, c), (x1, d), (b, d), (b, y1), (a, y1), (a, d), (x0, d), (x0, c), (a, c)]
    return np.asarray(pts, dtype=np.float64)


def _write_split(out: Path, split: str, n: int, seed: int, image_size: int, n_objects: int, prompts: bool,
                 anchor: int) -> Path:
    rng = random.Random(seed * 1_000_003 + SPLIT_STREAM[split])
    img_dir = out / "images" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    cell = image_size // GRID
    size = round(cell * OBJECT_FILL)
    margin = (cell - size) // 4  # the object sits away from its cell's edges: prompts around it stay inside
    path = out / f"{split}.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            prompt_shape = PROMPT_SHAPES[i % len(PROMPT_SHAPES)]
            kind = QUESTIONS[(i // len(PROMPT_SHAPES)) % len(QUESTIONS)]
            cells = rng.sample(range(GRID * GRID), n_objects)
            colors = rng.sample(OBJECT_COLORS, n_objects)
            objects = []
            for c, color in zip(cells, colors):
                row, col = divmod(c, GRID)
                x0 = col * cell + rng.randint(margin, cell - size - margin)
                y0 = row * cell + rng.randint(margin, cell - size - margin)
                objects.append({"shape": rng.choice(SHAPES), "color": color,
                                "box": [x0, y0, x0 + size, y0 + size], "target": False})
            target = rng.randrange(n_objects)
            objects[target]["target"] = True
            img = Image.new("RGB", (image_size, image_size), BACKGROUND)
            draw = ImageDraw.Draw(img)
            for o in objects:
                _draw_shape(draw, o["shape"], tuple(o["box"]), COLORS[o["color"]])
            t = objects[target]
            # the prompt's randomness is drawn whether or not it is drawn, so both twins share every record
            prompt_rng = random.Random(rng.getrandbits(64))
            if prompts:
                prompt = VisualPrompt(prompt_shape, PROMPT_RGB, sample_alpha(prompt_shape, prompt_rng), PROMPT_COLOR)
                region = Region(tuple(float(v) for v in t["box"]), [outline(t["shape"], tuple(t["box"]))])
                img = draw_prompts(img, [(prompt, region)], prompt_rng, anchor=anchor)
            rel = f"images/{split}/{i:06d}.png"
            img.save(out / rel, compress_level=1)
            question = f"What {kind} is the object {phrase(prompt_shape, PROMPT_COLOR)}?"
            answer = t[kind]
            f.write(json.dumps({
                "id": f"vip-{split}-{i:06d}", "image": rel, "category": prompt_shape, "question_kind": kind,
                "answer": answer, "prompt_drawn": prompts,
                "conversations": [{"from": "human", "value": f"<image>\n{question}"},
                                  {"from": "gpt", "value": answer}],
                "objects": objects}) + "\n")
    return path


def check_arguments(image_size: object, n_objects: object, prompts: object, anchor: object) -> None:
    """Refuse arguments that would write a different task than asked (``prompts: "false"`` is truthy), before
    a cached folder of that name is reused."""
    for name, value, kind in (("image_size", image_size, int), ("n_objects", n_objects, int), ("anchor", anchor, int),
                              ("prompts", prompts, bool)):
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"synthetic-vip: {name} must be {'true or false' if kind is bool else 'a whole number'}, "
                              f"got {value!r:.40}")
    if image_size % (2 * GRID) or image_size < 64:
        raise ConfigError(f"synthetic-vip: image_size ({image_size}) must be a multiple of {2 * GRID}, at least 64")
    if not 1 <= n_objects <= min(GRID * GRID, len(OBJECT_COLORS)):
        raise ConfigError(f"synthetic-vip: n_objects ({n_objects}) must be 1 to {GRID * GRID} (one per cell)")
    if anchor < 1:
        raise ConfigError(f"synthetic-vip: anchor must be >= 1 pixel, got {anchor}")


def generate_vip(out_dir: str | os.PathLike, n_train: int = 6000, n_test: int = 400, seed: int = 0,
                 image_size: int = 128, n_objects: int = 3, prompts: bool = True,
                 anchor: int = ANCHOR) -> dict[str, str]:
    """Write ``train.jsonl``, ``test.jsonl`` and ``images/{train,test}/*.png`` under ``out_dir``."""
    check_arguments(image_size, n_objects, prompts, anchor)
    meta = {"generator": "synthetic-vip", "version": GENERATOR_VERSION, "categories": list(PROMPT_SHAPES),
            "n_objects": n_objects, "prompts": prompts, "anchor": anchor}
    return write_splits(out_dir, lambda o, sp, n, sd, size: _write_split(o, sp, n, sd, size, n_objects, prompts,
                                                                         anchor), meta, n_train, n_test, seed, image_size)


class SyntheticVipDataset(LlavaJsonDataset):
    """The ``synthetic-vip`` dataset: generated on first use (into ``root``, default the vlmkit cache),
    then read through ``LlavaJsonDataset``. ``prompts: false`` is the same data with no prompt drawn."""

    def __init__(self, root: str | None = None, split: Literal["train", "test"] = "train", n_train: int = 6000,
                 n_test: int = 400, seed: int = 0, image_size: int = 128, n_objects: int = 3, prompts: bool = True,
                 anchor: int = ANCHOR, progress: bool | None = None, progress_callback: ProgressCallback | None = None):
        check_arguments(image_size, n_objects, prompts, anchor)
        name = (f"v{GENERATOR_VERSION}-seed{seed}-train{n_train}-test{n_test}-{image_size}px-{n_objects}objects"
                f"-anchor{anchor}-{'prompts' if prompts else 'noprompts'}")
        open_generated(self, "synthetic-vip", root, split, name, lambda tmp: generate_vip(
            tmp, n_train=n_train, n_test=n_test, seed=seed, image_size=image_size, n_objects=n_objects,
            prompts=prompts, anchor=anchor), False, progress, progress_callback)
