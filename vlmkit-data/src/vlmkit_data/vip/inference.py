"""One visual prompt drawn on a user's image at inference time (the ``vip`` transform with ``bbox``).

Mirrors ViP-LLaVA's ``cli_vip.py`` (``--shape --bbox --seg --rgb --alpha --width``): the prompt is
drawn with the evaluation style (constant sizes, opacity 128 unless given), and the phrase that
names it ("within the red rectangle") is returned for the user to put in the question.
"""

from __future__ import annotations

import math
import random
from typing import Sequence

import numpy as np
from PIL import Image

from vlmkit.errors import ConfigError

from .drawing import ANCHOR, Region, VisualPrompt, draw_prompts
from .phrases import SHAPES, parse_color, phrase


def parse_bbox(text: str | Sequence[float]) -> tuple[float, float, float, float]:
    """``"x1,y1,x2,y2"`` (original pixels) -> a box; refuses anything else with a clear message."""
    try:
        vals = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    except ValueError:
        vals = []
    if len(vals) == 4 and not all(math.isfinite(v) for v in vals):
        raise ConfigError(f"vip: bbox {text!r}: coordinates must be finite numbers (no NaN or inf)")
    if len(vals) != 4 or vals[2] < vals[0] or vals[3] < vals[1]:
        raise ConfigError(f"vip: bbox {text!r}: expected x1,y1,x2,y2 in image pixels with x2 >= x1 and y2 >= y1")
    return vals[0], vals[1], vals[2], vals[3]


def prompt_inference_image(image: Image.Image, bbox: str | Sequence[float], shape: str = "rectangle",
                           color: str | Sequence[int] | None = "red", *, polygons: Sequence[Sequence[float]] | None = None,
                           alpha: int = 128, width: int | None = None, constant: bool = True, seed: int = 0,
                           anchor: int = ANCHOR) -> tuple[Image.Image, str]:
    """Draw one prompt on ``image`` (RGB, original resolution); returns ``(image, phrase)``.

    ``color``: a named colour (red, lime, blue, yellow, fuchsia, aqua, orange, purple, gold), ``"r,g,b"``
    or ``"#rrggbb"``; the phrase names it only when it is one of the named colours. ``polygons``: flat
    ``[x1, y1, x2, y2, ...]`` outlines of the object (used by mask, mask contour, point, scribble,
    triangle and ellipse; the box otherwise). ``seed`` fixes the shape's random geometry.
    """
    if shape not in SHAPES:
        raise ConfigError(f"vip: shape '{shape}': expected one of {', '.join(SHAPES)}")
    if not 0 <= alpha <= 255:
        raise ConfigError(f"vip: alpha {alpha}: expected 0..255")
    box = parse_bbox(bbox)
    w, h = image.size
    if box[0] < 0 or box[1] < 0 or box[2] > w or box[3] > h:
        raise ConfigError(f"vip: bbox {list(box)} lies outside the {w}x{h} image")
    rgb, name = parse_color(color)
    polys = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in (polygons or [])]
    prompt = VisualPrompt(shape, rgb, alpha, name)
    out = draw_prompts(image.convert("RGB"), [(prompt, Region(box, polys))], random.Random(seed), constant=constant,
                       width=width, anchor=anchor)
    return out, phrase(shape, name)
