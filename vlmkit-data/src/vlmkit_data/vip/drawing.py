"""Drawing visual prompts (ViP-LLaVA, components.md §4.2) on the original-resolution image.

Every size is given for a 336 px canvas and scaled by ``s = max(W, H) / 336``, so a prompt covers the
same fraction of the image whatever its resolution; the image is padded and resized afterwards by the
processor. Prompts are drawn on a transparent RGBA overlay (pixels are *set*, not blended, so
overlapping strokes do not darken each other) which is then composited over the image with
``Image.alpha_composite``: a pixel under an opaque stroke becomes exactly the stroke colour.

All randomness comes from the ``random.Random`` passed in, in a fixed order, so a seed reproduces
the picture. Regions without polygons fall back to their box for every shape (the original fails on
``point`` there).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from .phrases import SHAPES, phrase

#: the canvas every size in the tables below refers to (CLIP-336's crop size)
ANCHOR = 336
ALPHA_RANGE = (96, 255)
MASK_ALPHA_RANGE = (48, 128)
#: largest interior angle a triangle prompt may have (degenerate slivers are redrawn)
MAX_TRIANGLE_ANGLE = 150.0

Point = tuple[float, float]


@dataclass(frozen=True)
class VisualPrompt:
    """What is drawn on one region: a shape in a colour (named or not) at an opacity."""

    shape: str
    rgb: tuple[int, int, int]
    alpha: int
    color_name: str | None = None

    @property
    def rgba(self) -> tuple[int, int, int, int]:
        return (*self.rgb, self.alpha)

    @property
    def phrase(self) -> str:
        return phrase(self.shape, self.color_name)


@dataclass
class Region:
    """A region in original-image pixels: its box and, when known, its polygons ((k, 2) arrays)."""

    bbox: tuple[float, float, float, float]
    polygons: list[np.ndarray] = field(default_factory=list)

    def bounds(self) -> tuple[float, float, float, float]:
        """Bounds of the union of the polygons, or the box."""
        if not self.polygons:
            return self.bbox
        pts = np.concatenate(self.polygons)
        return float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())

    def outlines(self) -> list[np.ndarray]:
        """The polygons, or the box as a 4-point polygon."""
        if self.polygons:
            return self.polygons
        x1, y1, x2, y2 = self.bbox
        return [np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], dtype=np.float64)]


# -- sizes ---------------------------------------------------------------------------------------------
def scale_factor(size: tuple[int, int], anchor: int = ANCHOR) -> float:
    """``s = max(W, H) / anchor``."""
    return max(size) / anchor


def _randint(rng: random.Random, lo: float, hi: float) -> int:
    a, b = int(lo), int(hi)
    return rng.randint(min(a, b), max(a, b))


def stroke_width(shape: str, s: float, rng: random.Random, constant: bool = False) -> int:
    """Line width of a shape's outline (at least 1). ``constant``: the fixed evaluation width."""
    if shape == "mask":
        return 1  # filled; the width is unused
    if constant:
        return max(1, int(3 * s))
    lo, hi = {"rectangle": (2, 8), "ellipse": (2, 8), "triangle": (2, 8), "scribble": (2, 12),
              "mask contour": (1, 2), "arrow": (1, 6)}.get(shape, (2, 8))
    return max(1, _randint(rng, lo * s, hi * s))


def point_radius(s: float, rng: random.Random, constant: bool = False) -> int:
    return max(1, int(8 * s)) if constant else max(1, _randint(rng, 5 * s, 20 * s))


def sample_alpha(shape: str, rng: random.Random) -> int:
    lo, hi = MASK_ALPHA_RANGE if shape == "mask" else ALPHA_RANGE
    return rng.randint(lo, hi)


# -- sampling inside a region ----------------------------------------------------------------------------
class _Inside:
    """Uniform points inside polygons (or a box), to pixel precision, by rasterising them once with PIL."""

    def __init__(self, polygons: Sequence[np.ndarray], bbox: tuple[float, float, float, float]):
        self.bbox = bbox
        self.pixels: np.ndarray | None = None
        if polygons:
            pts = np.concatenate(polygons)
            x0, y0 = math.floor(pts[:, 0].min()), math.floor(pts[:, 1].min())
            w = max(1, math.ceil(pts[:, 0].max()) - x0 + 1)
            h = max(1, math.ceil(pts[:, 1].max()) - y0 + 1)
            mask = Image.new("1", (w, h), 0)
            draw = ImageDraw.Draw(mask)
            for poly in polygons:
                if len(poly) >= 3:
                    draw.polygon([(float(x - x0), float(y - y0)) for x, y in poly], fill=1)
            ys, xs = np.nonzero(np.asarray(mask))
            if len(xs):
                self.origin = (x0, y0)
                self.mask = np.asarray(mask)
                self.pixels = np.stack([xs, ys], 1)

    def sample(self, rng: random.Random) -> Point:
        if self.pixels is None:
            x1, y1, x2, y2 = self.bbox
            return rng.uniform(x1, x2), rng.uniform(y1, y2)
        px, py = self.pixels[rng.randrange(len(self.pixels))]
        return self.origin[0] + px + rng.random(), self.origin[1] + py + rng.random()

    def contains(self, p: Point) -> bool:
        if self.pixels is None:
            x1, y1, x2, y2 = self.bbox
            return x1 <= p[0] <= x2 and y1 <= p[1] <= y2
        x, y = int(math.floor(p[0])) - self.origin[0], int(math.floor(p[1])) - self.origin[1]
        return 0 <= y < self.mask.shape[0] and 0 <= x < self.mask.shape[1] and bool(self.mask[y, x])


def _angles(a: Point, b: Point, c: Point) -> list[float]:
    out = []
    for p, q, r in ((a, b, c), (b, c, a), (c, a, b)):
        v1, v2 = (q[0] - p[0], q[1] - p[1]), (r[0] - p[0], r[1] - p[1])
        n = math.hypot(*v1) * math.hypot(*v2)
        if n == 0:
            return [180.0, 0.0, 0.0]
        cos = max(-1.0, min(1.0, (v1[0] * v2[0] + v1[1] * v2[1]) / n))
        out.append(math.degrees(math.acos(cos)))
    return out


# -- geometry of each shape (pure functions of the region and the rng) ------------------------------------
@dataclass(frozen=True)
class ArrowGeometry:
    tip: Point
    tail: Point
    #: the shaft's bend (a "wobbly" 2-segment shaft), or None for a straight one
    bend: Point | None
    head: tuple[Point, Point]
    length: float
    head_size: float
    filled: bool


def arrow_geometry(bbox: Sequence[float], s: float, rng: random.Random) -> ArrowGeometry:
    """§4.2: length ``U(0.8 min(bw, bh), max(int(50 s), 1))``, tip at the jittered box centre, head
    ``max(U(0.2, 0.5) L, int(6 s))`` with vertices at ±60° about the shaft. The shaft is never shorter
    than the head (the original lets it flip backwards through the head for small boxes)."""
    x1, y1, x2, y2 = bbox
    bw, bh = x2 - x1, y2 - y1
    length = rng.uniform(0.8 * min(bw, bh), max(int(50 * s), 1))
    theta = rng.uniform(0, 2 * math.pi)
    tip = ((x1 + x2) / 2 + rng.uniform(-0.25, 0.25) * bw, (y1 + y2) / 2 + rng.uniform(-0.25, 0.25) * bh)
    head = max(rng.uniform(0.2, 0.5) * length, int(6 * s))
    shaft = max(length - head, head)
    c, sn = math.cos(theta), math.sin(theta)
    tail = (tip[0] + shaft * c, tip[1] + shaft * sn)
    bend = None
    if rng.random() < 0.5:
        j = int(s)
        bend = ((tip[0] + tail[0]) / 2 + rng.uniform(-5, 5) * j, (tip[1] + tail[1]) / 2 + rng.uniform(-5, 5) * j)
    v1 = (tip[0] + head * math.cos(theta + math.pi / 3), tip[1] + head * math.sin(theta + math.pi / 3))
    v2 = (tip[0] + head * math.cos(theta - math.pi / 3), tip[1] + head * math.sin(theta - math.pi / 3))
    return ArrowGeometry(tip, tail, bend, (v1, v2), length, head, rng.random() < 0.5)


def triangle_points(region: Region, rng: random.Random, tries: int = 200) -> list[Point]:
    """3 uniform points inside the polygons' union (or the box) with every interior angle <= 150°."""
    inside = _Inside(region.polygons, region.bbox)
    for _ in range(tries):
        pts = [inside.sample(rng) for _ in range(3)]
        if max(_angles(*pts)) <= MAX_TRIANGLE_ANGLE:
            return pts
    x1, y1, x2, y2 = region.bounds()  # a region too thin for a proper triangle: span its bounds
    return [((x1 + x2) / 2, y1), (x2, y2), (x1, y2)]


def ellipse_box(region: Region, rng: random.Random) -> tuple[float, float, float, float]:
    """The union's bounds, grown about their centre by ``U(1, 1.5)`` (same factor on both axes)."""
    x1, y1, x2, y2 = region.bounds()
    k = rng.uniform(1.0, 1.5)
    cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2 * k, (y2 - y1) / 2 * k
    return cx - hw, cy - hh, cx + hw, cy + hh


def point_ellipse(region: Region, s: float, rng: random.Random, constant: bool = False) -> tuple[float, ...]:
    """A dot near the centre of one polygon (or the box): ``N(centre, diag(w/8, h/8))``, up to 10 tries
    to land inside, else a uniform point inside; radius ``r``, axes ``r*ar`` and ``r/ar``."""
    poly = [rng.choice(region.polygons)] if region.polygons else []
    inside = _Inside(poly, region.bbox)
    bx1, by1, bx2, by2 = (float(poly[0][:, 0].min()), float(poly[0][:, 1].min()), float(poly[0][:, 0].max()),
                          float(poly[0][:, 1].max())) if poly else region.bbox
    w, h = max(bx2 - bx1, 1e-6), max(by2 - by1, 1e-6)
    cx, cy = (bx1 + bx2) / 2, (by1 + by2) / 2
    centre = None
    for _ in range(10):
        p = (rng.gauss(cx, math.sqrt(w / 8)), rng.gauss(cy, math.sqrt(h / 8)))
        if inside.contains(p):
            centre = p
            break
    if centre is None:
        centre = inside.sample(rng)
    r = point_radius(s, rng, constant)
    ar = 1.0 if constant or rng.random() < 0.5 else rng.uniform(0.5, 2.0)
    rx, ry = r * ar, r / ar
    return centre[0] - rx, centre[1] - ry, centre[0] + rx, centre[1] + ry


def scribble_points(region: Region, s: float, rng: random.Random) -> list[Point]:
    """A cubic Bézier through 4 random points inside one polygon (or the box), ``int(1000 s)`` samples."""
    poly = [rng.choice(region.polygons)] if region.polygons else []
    inside = _Inside(poly, region.bbox)
    ctrl = np.array([inside.sample(rng) for _ in range(4)])
    t = np.linspace(0.0, 1.0, max(int(1000 * s), 2))[:, None]
    curve = ((1 - t) ** 3 * ctrl[0] + 3 * (1 - t) ** 2 * t * ctrl[1] + 3 * (1 - t) * t ** 2 * ctrl[2]
             + t ** 3 * ctrl[3])
    return [(float(x), float(y)) for x, y in curve]


# -- drawing ---------------------------------------------------------------------------------------------
def draw_prompt(draw: ImageDraw.ImageDraw, prompt: VisualPrompt, region: Region, s: float, rng: random.Random,
                constant: bool = False, width: int | None = None) -> None:
    """Draw one prompt on an RGBA overlay. ``width`` overrides the sampled line width."""
    shape, fill = prompt.shape, prompt.rgba
    if shape not in SHAPES:
        from vlmkit.errors import ConfigError

        raise ConfigError(f"unknown visual prompt shape '{shape}'; shapes: {', '.join(SHAPES)}")
    w = width if width is not None else (stroke_width(shape, s, rng, constant) if shape != "point" else 0)
    if shape == "rectangle":
        x1, y1, x2, y2 = region.bbox
        draw.rectangle((x1, y1, x2, y2), outline=fill, width=w)
    elif shape == "ellipse":
        draw.ellipse(ellipse_box(region, rng), outline=fill, width=w)
    elif shape == "triangle":
        pts = triangle_points(region, rng)
        draw.line(pts + [pts[0]], fill=fill, width=w, joint="curve")
    elif shape == "point":
        draw.ellipse(point_ellipse(region, s, rng, constant), fill=fill)
    elif shape == "scribble":
        # consecutive samples are ~1 px apart, so plain segments leave no visible gaps at the joints; PIL's
        # joint="curve" would cost 40x more here. The two ends get the round caps a curved joint would give.
        pts = scribble_points(region, s, rng)
        draw.line(pts, fill=fill, width=w)
        for x, y in (pts[0], pts[-1]):
            draw.ellipse((x - w / 2, y - w / 2, x + w / 2, y + w / 2), fill=fill)
    elif shape == "mask contour":
        for poly in region.outlines():  # a thick outline: the polygon stamped at every offset in [-w, w]^2
            closed = np.concatenate([poly, poly[:1]])
            for dx in range(-w, w + 1):
                for dy in range(-w, w + 1):
                    draw.line([(float(x) + dx, float(y) + dy) for x, y in closed], fill=fill, width=1)
    elif shape == "mask":
        for poly in region.outlines():
            draw.polygon([(float(x), float(y)) for x, y in poly], fill=fill, outline=None)
    elif shape == "arrow":
        g = arrow_geometry(region.bbox, s, rng)
        shaft = [g.tip, g.bend, g.tail] if g.bend else [g.tip, g.tail]
        draw.line(shaft, fill=fill, width=w, joint="curve")
        if g.filled:
            draw.polygon([g.tip, *g.head], fill=fill)
        else:
            draw.line([g.head[0], g.tip, g.head[1]], fill=fill, width=w, joint="curve")


def draw_prompts(image: Image.Image, prompts: Sequence[tuple[VisualPrompt, Region]], rng: random.Random,
                 constant: bool = False, width: int | None = None, anchor: int = ANCHOR) -> Image.Image:
    """Draw every ``(prompt, region)`` on one overlay and composite it over ``image`` (returns RGB)."""
    s = scale_factor(image.size, anchor)
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for prompt, region in prompts:
        draw_prompt(draw, prompt, region, s, rng, constant, width)
    return Image.alpha_composite(image.convert("RGBA"), overlay).convert("RGB")
