"""Synthetic details: a VQA task whose answer hides in pixel-level detail, for the resolution claims.

ConvLLaVA (a fifth stage lets the encoder read a higher resolution at the same token count) and S2 (features
of the image at several scales beat one scale at the same token count) both claim to help with small details.
This task makes one detail decisive and nothing else, so the claims can be tested in miniature:

* one square on white, filling one cell of a 4x4 grid (so that one visual token of a 4x4-token encoder sees
  it whole: an object cut across tokens has to be put together by the LLM, which the tiny 2-layer LLM learns
  far more slowly; see synthetic-shapes. A first version placed the square anywhere: after 600 steps the
  controls were not learnt, position 55 % and colour 62 to 79 %, so it said nothing about detail);
* the square is **striped** (1-px lines, horizontal or vertical, alternating its colour and black, faded in
  over ``TAPER`` pixels from its edges) or **plain** (filled with the stripes' mean, half its colour). Halving
  the image averages the stripes to that mean: at half the native resolution the two are the same picture,
  to within uint8 rounding (the fade keeps the resize filter from giving the stripes away at the edges);
* questions cycle over three categories: ``detail`` ("Is the square striped?", yes or no: chance 50 %),
  ``color`` and ``position`` (left or right), which are answerable at any resolution and show that a variant
  learnt at all.

Written as LLaVA JSONL plus PNG files (read by ``LlavaJsonDataset``), generated once into the vlmkit cache,
deterministic given the seed; the test split has its own random stream. Every answer is one token of the
tiny tokenizer.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from vlmkit.errors import ConfigError
from vlmkit.progress import ProgressCallback

from .llava_json import LlavaJsonDataset
from .synthetic import COLORS, SPLIT_STREAM, open_generated, write_splits

#: bump when the generator's output changes (invalidates generated folders)
GENERATOR_VERSION = 2
CATEGORIES = ("detail", "color", "position")


#: the stripes fade in over this many pixels from each edge of the square (a Hann ramp). A sharp edge would
#: give the stripes away after any resize filter but a box: a filter straddling the edge where the stripes
#: start does not average them out (measured through the convnext view at half size: up to 0.25 in
#: normalised units at the edge with a sharp start, 0.015 with this ramp, the size of uint8 rounding)
TAPER = 8


def _ramp(side: int) -> np.ndarray:
    ramp = np.ones(side)
    t = np.arange(TAPER)
    rise = 0.5 - 0.5 * np.cos(np.pi * (t + 0.5) / TAPER)
    ramp[:TAPER], ramp[-TAPER:] = rise, rise[::-1]
    return ramp


def draw_square(image_size: int, x0: int, y0: int, side: int, color: tuple[int, int, int], striped: bool,
                horizontal: bool) -> np.ndarray:
    """The image as an array: white, with the square plain (half the colour: the stripes' mean) or striped
    (1-px lines alternating the colour and black, faded in from the edges)."""
    img = np.full((image_size, image_size, 3), 255.0)
    half = np.asarray(color, dtype=float) / 2
    square = np.broadcast_to(half, (side, side, 3)).copy()
    if striped:
        sign = np.where(np.arange(side) % 2 == 0, 1.0, -1.0)
        carrier = sign[:, None] if horizontal else sign[None, :]
        square += (np.outer(_ramp(side), _ramp(side)) * carrier)[..., None] * half
    img[y0:y0 + side, x0:x0 + side] = square
    return np.round(img).astype(np.uint8)


def _write_split(out: Path, split: str, n: int, seed: int, image_size: int) -> Path:
    rng = random.Random(seed * 1_000_003 + SPLIT_STREAM[split])
    img_dir = out / "images" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    side = image_size // 4
    path = out / f"{split}.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            category = CATEGORIES[i % len(CATEGORIES)]
            color = rng.choice(list(COLORS))
            striped, horizontal = rng.random() < 0.5, rng.random() < 0.5
            cell = rng.randrange(16)  # one cell of the 4x4 grid: the square is one visual token's worth
            x0, y0 = (cell % 4) * side, (cell // 4) * side
            rel = f"images/{split}/{i:06d}.png"
            Image.fromarray(draw_square(image_size, x0, y0, side, COLORS[color], striped, horizontal)).save(
                out / rel, compress_level=1)
            if category == "detail":
                question, answer = "Is the square striped?", "yes" if striped else "no"
            elif category == "color":
                question, answer = "What color is the square?", color
            else:
                question, answer = "Is the square on the left or right?", \
                    "left" if x0 + side / 2 < image_size / 2 else "right"
            f.write(json.dumps({
                "id": f"details-{split}-{i:06d}", "image": rel, "category": category, "answer": answer,
                "conversations": [{"from": "human", "value": f"<image>\n{question}"},
                                  {"from": "gpt", "value": answer}],
                "square": {"box": [x0, y0, x0 + side, y0 + side], "color": color, "striped": striped,
                           "horizontal": horizontal}}) + "\n")
    return path


def generate_details(out_dir: str | os.PathLike, n_train: int = 6000, n_test: int = 300, seed: int = 0,
                     image_size: int = 256) -> dict[str, str]:
    """Write ``train.jsonl``, ``test.jsonl`` and ``images/{train,test}/*.png`` under ``out_dir``."""
    if image_size < 8 * TAPER or image_size % 8:
        raise ConfigError(f"synthetic-details: image_size ({image_size}) must be a multiple of 8, at least "
                          f"{8 * TAPER} (the square, a quarter of it, fades its stripes in over {TAPER} px a side)")
    return write_splits(out_dir, _write_split, {"generator": "synthetic-details", "version": GENERATOR_VERSION,
                                                "categories": list(CATEGORIES)}, n_train, n_test, seed, image_size)


class SyntheticDetailsDataset(LlavaJsonDataset):
    """The ``synthetic-details`` dataset: generated on first use (into ``root``, default the vlmkit cache),
    then read through ``LlavaJsonDataset``."""

    def __init__(self, root: str | None = None, split: Literal["train", "test"] = "train", n_train: int = 6000,
                 n_test: int = 300, seed: int = 0, image_size: int = 256, progress: bool | None = None,
                 progress_callback: ProgressCallback | None = None):
        name = f"v{GENERATOR_VERSION}-seed{seed}-train{n_train}-test{n_test}-{image_size}px"
        open_generated(self, "synthetic-details", root, split, name, lambda tmp: generate_details(
            tmp, n_train=n_train, n_test=n_test, seed=seed, image_size=image_size), False, progress, progress_callback)

