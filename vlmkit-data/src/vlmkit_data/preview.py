"""``vlmkit data preview``: a grid of samples as the model would get them, prompts drawn in, text below.

Works for any registered dataset and transforms: samples are read through the dataset plugin and
passed through the transforms with the per-sample random stream training uses at epoch 0, so the
picture shows what a training run would see (before the processor's pad/resize). Boxes carried by
the sample (``Sample.boxes``) are outlined in thin cyan. A sample that fails to load gets a cell with
its error instead of being left out.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from typing import Any, Sequence

from PIL import Image, ImageDraw, ImageFont

from vlmkit.data.samples import Sample
from vlmkit.errors import DataError

BACKGROUND = (255, 255, 255)
CELL_BACKGROUND = (236, 236, 236)
BOX_COLOR = (0, 200, 255)
TEXT_COLOR = (20, 20, 20)
ERROR_COLOR = (200, 0, 0)
ROLE_NAMES = {"user": "USER", "assistant": "GPT", "system": "SYSTEM"}


@dataclass
class PreviewItem:
    index: int
    sample: Sample | None = None
    error: str | None = None


def sample_rng(seed: int, index: int, epoch: int = 0) -> random.Random:
    """The per-sample random stream of ``vlmkit.training.data.SupervisedDataset`` (same seed -> same picture)."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "little"))


def choose_indices(total: int, n: int, shuffle: bool, seed: int) -> list[int]:
    if n >= total:
        return list(range(total))
    return sorted(random.Random(seed).sample(range(total), n)) if shuffle else list(range(n))


def load_items(dataset: Any, transforms: Sequence[Any], indices: Sequence[int], seed: int = 0) -> list[PreviewItem]:
    items = []
    for i in indices:
        try:
            sample = dataset[i]
            rng = sample_rng(seed, i)
            for t in transforms:
                sample = t(sample, rng)
            items.append(PreviewItem(i, sample))
        except DataError as exc:
            items.append(PreviewItem(i, error=str(exc)))
    return items


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def wrap_text(text: str, font: Any, width: int) -> list[str]:
    """Wrap to ``width`` pixels (greedy on words; very long words are cut)."""
    lines: list[str] = []
    for para in text.split("\n"):
        words = para.split(" ")
        line = ""
        for word in words:
            candidate = f"{line} {word}" if line else word
            if font.getlength(candidate) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            while font.getlength(word) > width and len(word) > 1:  # cut a word wider than the cell
                k = max(1, int(len(word) * width / font.getlength(word)))
                lines.append(word[:k])
                word = word[k:]
            line = word
        lines.append(line)
    return lines


def sample_text(item: PreviewItem) -> str:
    if item.sample is None:
        return f"#{item.index} error: {item.error}"
    s = item.sample
    head = f"#{item.index} id={s.id}"
    prompts = s.meta.get("visual_prompts") if isinstance(s.meta, dict) else None
    if prompts:
        head += " | " + "; ".join(p.get("phrase", "") for p in prompts)
    turns = [f"{ROLE_NAMES.get(t.role, t.role)}: {t.text}" for t in s.turns]
    return "\n".join([head, *turns])


def render_cell(item: PreviewItem, cell: int, text_lines: int, font: Any, draw_boxes: bool = True) -> Image.Image:
    line_h = int(font.size * 1.25) if hasattr(font, "size") else 12
    out = Image.new("RGB", (cell, cell + text_lines * line_h + 6), BACKGROUND)
    canvas = Image.new("RGB", (cell, cell), CELL_BACKGROUND)
    if item.sample is not None and item.sample.images:
        img = item.sample.images[0]
        k = min(cell / img.width, cell / img.height)
        shown = img.resize((max(1, round(img.width * k)), max(1, round(img.height * k))), Image.BILINEAR)
        ox, oy = (cell - shown.width) // 2, (cell - shown.height) // 2
        canvas.paste(shown, (ox, oy))
        if draw_boxes and item.sample.boxes:
            draw = ImageDraw.Draw(canvas)
            for b in list(item.sample.boxes[0]):
                x1, y1, x2, y2 = (float(v) for v in list(b)[:4])
                draw.rectangle((ox + x1 * k, oy + y1 * k, ox + x2 * k, oy + y2 * k), outline=BOX_COLOR, width=1)
        if len(item.sample.images) > 1:
            ImageDraw.Draw(canvas).text((4, 4), f"+{len(item.sample.images) - 1} image(s)", fill=ERROR_COLOR,
                                        font=font)
    out.paste(canvas, (0, 0))
    lines = wrap_text(sample_text(item), font, cell - 8)
    if len(lines) > text_lines:
        lines = lines[:text_lines - 1] + [lines[text_lines - 1][: max(0, len(lines[text_lines - 1]) - 3)] + "..."]
    draw = ImageDraw.Draw(out)
    color = ERROR_COLOR if item.sample is None else TEXT_COLOR
    for j, text in enumerate(lines):
        draw.text((4, cell + 3 + j * line_h), text, fill=color, font=font)
    return out


def render_grid(items: Sequence[PreviewItem], cell: int = 320, cols: int | None = None, text_lines: int = 10,
                font_size: int = 12, draw_boxes: bool = True) -> Image.Image:
    if not items:
        raise DataError("nothing to preview: the dataset is empty")
    font = _font(font_size)
    cells = [render_cell(it, cell, text_lines, font, draw_boxes) for it in items]
    cols = cols or math.ceil(math.sqrt(len(cells)))
    rows = math.ceil(len(cells) / cols)
    gap = 6
    cw, ch = cells[0].size
    grid = Image.new("RGB", (cols * cw + (cols + 1) * gap, rows * ch + (rows + 1) * gap), (200, 200, 200))
    for k, c in enumerate(cells):
        r, q = divmod(k, cols)
        grid.paste(c, (gap + q * (cw + gap), gap + r * (ch + gap)))
    return grid


def preview(path: str, out: str, image_root: str | None = None, dataset: str = "llava-json",
            transforms: Sequence[Any] = (), n: int = 16, seed: int = 0, shuffle: bool = False, cell: int = 320,
            cols: int | None = None, text_lines: int = 10, draw_boxes: bool = True,
            box_file: str | None = None) -> dict[str, Any]:
    """Write the grid PNG; returns what was shown (indices, errors). ``transforms``: registry specs.
    ``box_file``: an MG-LLaVA box file joined by record id (``vlmkit data boxes`` writes one); its boxes are
    drawn after MG-LLaVA's filter, records without one get none."""
    from vlmkit.model.assembly import build_component

    from .check import open_dataset

    ds = open_dataset(path, image_root, dataset)
    if box_file is not None:
        from .box_files import BoxJoin

        ds = BoxJoin(ds, box_file, missing="empty")
    built = [build_component("transform", t) for t in transforms]
    indices = choose_indices(len(ds), n, shuffle, seed)
    items = load_items(ds, built, indices, seed)
    grid = render_grid(items, cell=cell, cols=cols, text_lines=text_lines, draw_boxes=draw_boxes)
    grid.save(out)
    return {"out": out, "records": len(ds), "shown": [it.index for it in items],
            "errors": [{"index": it.index, "error": it.error} for it in items if it.error], "size": list(grid.size)}
