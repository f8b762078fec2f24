"""AnyRes tiling: the grid a large image is cut into, and how many tokens it becomes. No torch here.

LLaVA-NeXT (LLaVA-1.6) and LLaVA-OneVision show an encoder a large image as a low-resolution overview
(the *base* crop) plus tiles on a grid chosen by the image's aspect ratio from a list of *pinpoints*
(allowed resolutions). The tiles' tokens are laid out as one big grid, the rows of padding the tiling
added are cut off (*unpad*), and a learned *image-newline* token ends each row. OneVision then caps the
grid (``anyres_max_N``: at most about N tiles' worth of tokens, by bilinear downsampling).

This module is the arithmetic both sides share: the data side (``vlmkit.data.tiled_view``) cuts pixels,
the model side (``vlmkit.model.tile_merge``) lays out tokens, and the token count for text budgeting
comes from here without running anything. Sizes are (height, width), pinpoints too, as transformers'
``image_grid_pinpoints``; every rounding step follows transformers' LLaVA-NeXT code, so counts match.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

from vlmkit.errors import ConfigError
from vlmkit.model.config_keys import check_keys

MERGES = ("flat", "spatial", "spatial_unpad")
#: how tiles are resampled: ``pil`` (PIL bicubic, as the original LLaVA code and transformers' PIL processors) or
#: ``torch`` (antialiased bicubic on uint8 tensors, as transformers' default torchvision processors; faster)
RESAMPLERS = ("pil", "torch")
#: how unpadding rounds the image's height (or width) on the token grid: ``round`` is transformers'
#: ``int(round(x, 7))``, ``floor`` the LLaVA code's ``int(x)`` (haotian-liu/LLaVA, LLaVA-VL/LLaVA-NeXT); they differ
#: where ``x`` lands a hair below a whole number (1 of 20,000 random sizes on LLaVA-1.6: 2 rows)
UNPAD_ROUNDINGS = ("round", "floor")
#: the largest grid a pinpoint may ask for (OneVision's (6x6) in 384 px tiles is 36 tiles)
MAX_TILES_PER_IMAGE = 100

_RANGE = re.compile(r"^\s*\((\d+)x(\d+)\)\s*,\s*\.\.\.\s*,\s*\((\d+)x(\d+)\)\s*$")


@dataclass(frozen=True)
class Tiling:
    """How a model tiles each image.

    ``pinpoints``: allowed (height, width) resolutions in pixels of the first encoder's view; each side is a
    multiple of that view's size, so each pinpoint is a grid of whole tiles. ``merge``: ``flat`` (each
    crop's tokens one after another), ``spatial`` (tiles laid out as one grid, row by row) or
    ``spatial_unpad`` (that grid without the padding rows or columns, and an image-newline token after each
    row; LLaVA-NeXT's and OneVision's). ``anyres_max``: OneVision's cap, in tiles (``anyres_max_9``: 9);
    None for none. ``tile_multi_images``: False tiles an image only when it is alone in its sample
    (OneVision: several images each get the base crop only). ``resampler``: ``pil`` (the original code's pixels)
    or ``torch`` (transformers' torchvision processors' pixels, faster); see ``RESAMPLERS``. ``unpad_rounding``:
    ``round`` (transformers) or ``floor`` (the original LLaVA code); see ``UNPAD_ROUNDINGS``.
    """

    pinpoints: tuple[tuple[int, int], ...]
    merge: str = "spatial_unpad"
    anyres_max: int | None = None
    tile_multi_images: bool = True
    resampler: str = "pil"
    unpad_rounding: str = "round"

    KEYS = ("pinpoints", "merge", "anyres_max", "tile_multi_images", "resampler", "unpad_rounding")

    @property
    def newline(self) -> bool:
        return self.merge == "spatial_unpad"

    @classmethod
    def from_dict(cls, data: Any, where: str = "model.tiling") -> "Tiling":
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping with {', '.join(cls.KEYS)}, got {type(data).__name__}")
        check_keys(data, set(cls.KEYS), where)
        if "pinpoints" not in data:
            raise ConfigError(f"{where}: missing 'pinpoints' (a list of [height, width] resolutions, or a range "
                              "such as '(1x1),...,(3x3)' in tiles)")
        merge = data.get("merge", "spatial_unpad")
        if merge not in MERGES:
            raise ConfigError(f"{where}.merge: expected one of {', '.join(MERGES)}, got {merge!r}")
        cap = data.get("anyres_max")
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise ConfigError(f"{where}.anyres_max: expected a positive whole number of tiles or null, got {cap!r}")
        multi = data.get("tile_multi_images", True)
        if not isinstance(multi, bool):
            raise ConfigError(f"{where}.tile_multi_images: expected true or false, got {multi!r}")
        resampler = data.get("resampler", "pil")
        if resampler not in RESAMPLERS:
            raise ConfigError(f"{where}.resampler: expected one of {', '.join(RESAMPLERS)}, got {resampler!r}")
        rounding = data.get("unpad_rounding", "round")
        if rounding not in UNPAD_ROUNDINGS:
            raise ConfigError(f"{where}.unpad_rounding: expected one of {', '.join(UNPAD_ROUNDINGS)}, got {rounding!r}")
        return cls(_pinpoints(data["pinpoints"], f"{where}.pinpoints"), merge, cap, multi, resampler, rounding)

    def to_dict(self) -> dict[str, Any]:
        if self.pinpoints[0][0] < 0:  # a range in tiles, not resolved yet: written back as it was given
            rows, cols = [-p[0] for p in self.pinpoints], [-p[1] for p in self.pinpoints]
            pins: Any = f"({min(rows)}x{min(cols)}),...,({max(rows)}x{max(cols)})"
        else:
            pins = [list(p) for p in self.pinpoints]
        return {"pinpoints": pins, "merge": self.merge, "anyres_max": self.anyres_max,
                "tile_multi_images": self.tile_multi_images, "resampler": self.resampler,
                "unpad_rounding": self.unpad_rounding}

    def tiles(self, images_in_sample: int) -> bool:
        """Whether an image is tiled in a sample of this many images (OneVision tiles only a lone image)."""
        return self.tile_multi_images or images_in_sample == 1

    def check_tile(self, tile: int, where: str = "model.tiling.pinpoints") -> None:
        """Every pinpoint must be whole tiles of ``tile`` px (the first encoder's input size): else the grid
        would cut an encoder input in two. Raised when the model is built."""
        bad = [p for p in self.pinpoints if p[0] % tile or p[1] % tile]
        if bad:
            raise ConfigError(f"{where}: {list(bad[0])} is not a multiple of the encoder's input size {tile} px on "
                              f"both sides; every pinpoint must be a grid of whole {tile} px tiles")
        big = [p for p in self.pinpoints if (p[0] // tile) * (p[1] // tile) > MAX_TILES_PER_IMAGE]
        if big:
            raise ConfigError(f"{where}: {list(big[0])} is {(big[0][0] // tile) * (big[0][1] // tile)} tiles of "
                              f"{tile} px; at most {MAX_TILES_PER_IMAGE} per image")

    def resolved(self, tile: int) -> "Tiling":
        """Pinpoints given in tiles (``(1x1),...,(3x3)``, kept as negative sizes until the tile is known) in px."""
        if all(p[0] > 0 for p in self.pinpoints):
            return self
        pts = tuple((-h * tile, -w * tile) if h < 0 else (h, w) for h, w in self.pinpoints)
        return dataclasses.replace(self, pinpoints=pts)


def _pinpoints(value: Any, where: str) -> tuple[tuple[int, int], ...]:
    """A list of [h, w] in px, or OneVision's range string ``(1x1),...,(6x6)`` in tiles (stored negative
    until ``Tiling.resolved`` knows the tile size)."""
    if isinstance(value, str):
        m = _RANGE.match(value)
        if not m:
            raise ConfigError(f"{where}: {value!r} is not a range like '(1x1),...,(6x6)'")
        a, b, c, d = (int(g) for g in m.groups())
        if min(a, b) < 1 or c < a or d < b:
            raise ConfigError(f"{where}: {value!r} is an empty range")
        # as LLaVA-NeXT's repo expands it: rows outer, columns inner, each (rows x cols) in tiles
        return tuple((-i, -j) for i in range(a, c + 1) for j in range(b, d + 1))
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"{where}: expected a non-empty list of [height, width] resolutions, got {value!r}")
    out = []
    for k, p in enumerate(value):
        ok = isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(x, int) and not isinstance(x, bool)
                                                                  and x > 0 for x in p)
        if not ok:
            raise ConfigError(f"{where}[{k}]: expected [height, width] in positive pixels, got {p!r}")
        out.append((int(p[0]), int(p[1])))
    return tuple(out)


# -- the arithmetic (transformers' rounding, step by step) ----------------------------------------
def best_resolution(size: tuple[int, int], pinpoints: tuple[tuple[int, int], ...] | list) -> tuple[int, int]:
    """The pinpoint that keeps most of the image's pixels, then wastes fewest (LLaVA-NeXT's choice)."""
    h, w = size
    best, most, waste = None, 0, float("inf")
    for ph, pw in pinpoints:
        scale = min(pw / w, ph / h)
        effective = min(int(w * scale) * int(h * scale), w * h)
        wasted = ph * pw - effective
        if effective > most or (effective == most and wasted < waste):
            best, most, waste = (ph, pw), effective, wasted
    assert best is not None  # pinpoints are never empty (Tiling refuses that)
    return best


def grid_shape(size: tuple[int, int], pinpoints: tuple[tuple[int, int], ...] | list, tile: int) -> tuple[int, int]:
    """(rows, columns) of tiles for an image of ``size``."""
    ph, pw = best_resolution(size, pinpoints)
    return ph // tile, pw // tile


def fitted_size(size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    """The image's size once scaled (aspect kept) to fit ``target``; the rest of ``target`` is padding."""
    h, w = size
    th, tw = target
    sw, sh = tw / w, th / h
    if sw < sh:
        return min(math.ceil(h * sw), th), tw
    return th, min(math.ceil(w * sh), tw)


def unpadded_grid(grid: tuple[int, int], size: tuple[int, int], rounding: str = "round") -> tuple[int, int, int, int]:
    """(height, width, top, left) of the part of a (rows x cols) token grid that holds the image, not padding;
    ``rounding`` as ``Tiling.unpad_rounding``."""
    gh, gw = grid
    h, w = size

    def whole(x: float) -> int:
        return int(round(x, 7)) if rounding == "round" else int(x)

    if w / h > gw / gh:
        new_h = whole(h * (gw / w))
        pad = (gh - new_h) // 2
        return gh - 2 * pad, gw, pad, 0
    new_w = whole(w * (gh / h))
    pad = (gw - new_w) // 2
    return gh, gw - 2 * pad, 0, pad


def capped_grid(grid: tuple[int, int], anyres_max: int | None, tile_side: int) -> tuple[int, int]:
    """OneVision's cap: a grid holding more than about ``anyres_max`` tiles of ``tile_side``^2 tokens (by a
    factor of 1.1) is downsampled to ``(h // ratio, w // ratio)``."""
    h, w = grid
    if anyres_max is None:
        return grid
    ratio = math.sqrt(h * w / (anyres_max * tile_side ** 2))
    if ratio > 1.1:
        return int(h // ratio), int(w // ratio)
    return grid


def count_tokens(tiling: Tiling, crop_grid: tuple[int, int], tile: int, size: tuple[int, int] | None,
                 num_crops: int) -> int:
    """Tokens of one image: ``crop_grid`` is the token grid of one crop (after the connectors), ``tile`` the
    first view's size in px, ``size`` the original (height, width), ``num_crops`` 1 (base only) or 1 + tiles."""
    per_crop = crop_grid[0] * crop_grid[1]
    if num_crops <= 1 or size is None:
        return per_crop + (1 if tiling.newline else 0)
    rows, cols = grid_shape(size, tiling.pinpoints, tile)
    if tiling.merge == "flat":
        return per_crop * (1 + rows * cols)
    full = (rows * crop_grid[0], cols * crop_grid[1])
    if tiling.merge == "spatial":
        return per_crop + full[0] * full[1]
    uh, uw, _, _ = unpadded_grid(full, size, tiling.unpad_rounding)
    uh, uw = capped_grid((uh, uw), tiling.anyres_max, crop_grid[0])
    return per_crop + uh * (uw + 1)
