"""What makes a box unusable, in one place for the loaders (training) and ``data check``: non-finite
coordinates, x2 < x1 or y2 < y1, or a box outside its image. (Every comparison with NaN is False, so
finiteness is checked first.)"""

from __future__ import annotations

import math
from typing import Any, Sequence


def box_problem(box: Sequence[Any], size: tuple[int, int]) -> tuple[str, str] | None:
    """``(message, kind)`` for an unusable ``[x1, y1, x2, y2]`` on a ``(width, height)`` image; None if fine."""
    try:
        x1, y1, x2, y2 = (float(v) for v in list(box)[:4])
    except (TypeError, ValueError):
        return f"box {list(box)!r} is not four numbers", "bad_box"
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        return f"box {[x1, y1, x2, y2]} has a non-finite coordinate (NaN or inf)", "bad_box"
    if x2 < x1 or y2 < y1:
        return f"box {[x1, y1, x2, y2]} has x2 < x1 or y2 < y1", "bad_box"
    w, h = size
    if x1 < 0 or y1 < 0 or x2 > w or y2 > h:
        return f"box {[x1, y1, x2, y2]} lies outside the {w}x{h} image", "box_outside_image"
    return None
