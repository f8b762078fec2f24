"""ViP visual prompt drawing: the sizes, opacities, colours and geometry of components.md §4.2 / §4.6."""

from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image

from vlmkit.data.image_processing import transform_image
from vlmkit.model.contracts import ImageView
from vlmkit_data.vip import SHAPES, Region, VisualPrompt, draw_prompts, phrase
from vlmkit_data.vip.drawing import (
    arrow_geometry,
    ellipse_box,
    point_ellipse,
    point_radius,
    sample_alpha,
    scale_factor,
    scribble_points,
    stroke_width,
    triangle_points,
)

RED = (255, 0, 0)


def noise(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def draws(fn, n: int = 400) -> list:
    return [fn(random.Random(k)) for k in range(n)]


def test_sizes_for_672x448_scale_by_two():
    s = scale_factor((672, 448))
    assert s == 2.0
    widths = draws(lambda r: stroke_width("rectangle", s, r))
    assert min(widths) == 4 and max(widths) == 16  # randint(int(2s), int(8s)), both ends reached
    assert stroke_width("rectangle", s, random.Random(0), constant=True) == 6  # int(3s)
    radii = draws(lambda r: point_radius(s, r))
    assert min(radii) == 10 and max(radii) == 40
    assert point_radius(s, random.Random(0), constant=True) == 16  # int(8s)
    lengths = draws(lambda r: arrow_geometry((300, 200, 310, 210), s, r).length)
    assert max(lengths) <= 100 and min(lengths) >= 8  # U(0.8 * min(bw, bh), int(50 s))
    assert max(lengths) > 90
    assert set(draws(lambda r: stroke_width("mask contour", s, r))) == {2, 3, 4}
    assert max(draws(lambda r: stroke_width("scribble", s, r))) == 24


def test_small_images_never_get_zero_width():
    s = scale_factor((40, 30))
    assert all(stroke_width(shape, s, random.Random(k)) >= 1 for shape in SHAPES for k in range(20))
    assert point_radius(s, random.Random(0)) >= 1


def test_alpha_ranges():
    alphas = draws(lambda r: sample_alpha("rectangle", r), 2000)
    assert min(alphas) == 96 and max(alphas) == 255
    masks = draws(lambda r: sample_alpha("mask", r), 2000)
    assert min(masks) == 48 and max(masks) == 128


def test_opaque_stroke_pixel_equals_its_colour_and_alpha_blends():
    img = noise(200, 150)
    colour = (10, 200, 30)
    out = draw_prompts(img, [(VisualPrompt("rectangle", colour, 255), Region((20, 30, 120, 100)))], random.Random(0),
                       width=3)
    arr, src = np.asarray(out), np.asarray(img)
    assert tuple(arr[30, 60]) == colour and tuple(arr[65, 20]) == colour  # on the top and left edges
    assert (arr[65, 70] == src[65, 70]).all()  # inside the rectangle: untouched
    half = draw_prompts(img, [(VisualPrompt("rectangle", colour, 128), Region((20, 30, 120, 100)))], random.Random(0),
                        width=3)
    expected = (np.array(colour) * 128 + src[30, 60].astype(int) * 127) / 255  # "over" with alpha 128/255
    assert np.abs(np.asarray(half)[30, 60].astype(int) - expected).max() <= 1


def test_phrases():
    assert phrase("arrow", "red") == "pointed to by the red arrow"
    assert phrase("point", None) == "at the point"
    assert phrase("rectangle", "red") == "within the red rectangle"
    assert phrase("mask contour", "blue") == "with the blue mask contour"
    assert phrase("ellipse", "gold", article=False) == "within gold ellipse"
    assert {s: phrase(s) for s in ("triangle", "scribble", "mask")} == {
        "triangle": "with the triangle", "scribble": "with the scribble", "mask": "with the mask"}


def test_prompt_drawn_before_padding_lands_at_y_plus_80():
    img = Image.new("RGB", (640, 480), (255, 255, 255))
    x, y = 300, 200
    out = draw_prompts(img, [(VisualPrompt("mask", RED, 255), Region((x - 5, y - 5, x + 5, y + 5)))], random.Random(0))
    padded, aff = transform_image(out, ImageView(size=640, resize="pad"))
    assert padded.size == (640, 640) and aff.point(x, y) == (x, y + 80)
    arr = np.asarray(padded)
    assert tuple(arr[y + 80, x]) == RED
    assert tuple(arr[y, x]) == (255, 255, 255)


@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_draws_without_polygons_near_its_box(shape):
    img = Image.new("RGB", (400, 300), (255, 255, 255))
    box = (150, 100, 250, 180)
    out = draw_prompts(img, [(VisualPrompt(shape, RED, 255), Region(box))], random.Random(3))
    changed = np.argwhere((np.asarray(out) != 255).any(-1))
    assert len(changed) > 20, shape
    ys, xs = changed[:, 0], changed[:, 1]
    if shape != "arrow":  # the arrow starts near the centre and may leave the box
        slack = 20 if shape == "ellipse" else 10  # the ellipse grows its box by up to 1.5x
        w, h = box[2] - box[0], box[3] - box[1]
        assert xs.min() >= box[0] - slack - (w * 0.25 if shape == "ellipse" else 0)
        assert xs.max() <= box[2] + slack + (w * 0.25 if shape == "ellipse" else 0)
        assert ys.min() >= box[1] - slack - (h * 0.25 if shape == "ellipse" else 0)
        assert ys.max() <= box[3] + slack + (h * 0.25 if shape == "ellipse" else 0)


L_POLY = np.array([[50, 50], [150, 50], [150, 60], [60, 60], [60, 250], [50, 250]], float)  # an L shape


def in_l(p, tol: float = 1.0) -> bool:
    """Inside the L, to pixel precision (points are sampled from the rasterised polygon)."""
    x, y = p
    return ((50 - tol <= x <= 150 + tol and 50 - tol <= y <= 60 + tol)
            or (50 - tol <= x <= 60 + tol and 50 - tol <= y <= 250 + tol))


def test_polygon_shapes_sample_inside_the_polygon_not_its_box():
    region = Region((50, 50, 300, 250), [L_POLY])  # the box is much larger than the L
    for k in range(30):
        assert all(in_l(p) for p in triangle_points(region, random.Random(k)))
        curve = scribble_points(region, 1.0, random.Random(k))
        assert in_l(curve[0]) and in_l(curve[-1]) and len(curve) == 1000  # int(1000 s) samples, ends at controls
        x1, y1, x2, y2 = point_ellipse(region, 1.0, random.Random(k))
        assert in_l(((x1 + x2) / 2, (y1 + y2) / 2))
    img = Image.new("RGB", (400, 300), (255, 255, 255))
    out = draw_prompts(img, [(VisualPrompt("mask", RED, 255), region)], random.Random(0))
    ys, xs = np.nonzero((np.asarray(out) != 255).any(-1))
    assert len(xs) > 1500 and all(in_l((x, y)) for x, y in zip(xs, ys))


def test_ellipse_spans_the_polygon_union_grown_up_to_1_5x():
    other = np.array([[200, 200], [220, 200], [220, 220]], float)
    region = Region((0, 0, 400, 300), [L_POLY, other])
    for k in range(20):
        x1, y1, x2, y2 = ellipse_box(region, random.Random(k))
        w, h = x2 - x1, y2 - y1
        assert 170 - 1e-6 <= w <= 170 * 1.5 + 1e-6 and abs(w / 170 - h / 200) < 1e-9  # same factor on both axes
        assert abs((x1 + x2) / 2 - 135) < 1e-9 and abs((y1 + y2) / 2 - 150) < 1e-9


def test_triangles_have_no_angle_above_150_degrees():
    region = Region((0, 0, 100, 100))
    for k in range(50):
        a, b, c = (np.array(p) for p in triangle_points(region, random.Random(k)))
        for p, q, r in ((a, b, c), (b, c, a), (c, a, b)):
            v1, v2 = q - p, r - p
            cos = v1 @ v2 / np.linalg.norm(v1) / np.linalg.norm(v2)
            assert np.degrees(np.arccos(np.clip(cos, -1, 1))) <= 150 + 1e-6


def test_arrow_head_geometry():
    g = arrow_geometry((100, 100, 200, 160), 1.0, random.Random(5))
    tip = np.array(g.tip)
    assert abs(tip[0] - 150) <= 25 and abs(tip[1] - 130) <= 15  # centre jittered by <= 0.25 of the box
    for v in g.head:
        assert np.isclose(np.linalg.norm(np.array(v) - tip), g.head_size)
    assert g.head_size >= 6 and np.linalg.norm(np.array(g.tail) - tip) >= g.head_size  # shaft never flips


def test_drawing_is_reproducible_from_the_rng():
    img = noise(300, 200, 1)
    pairs = [(VisualPrompt(s, RED, 200), Region((40, 40, 200, 150))) for s in SHAPES]
    a = draw_prompts(img, pairs, random.Random(7))
    b = draw_prompts(img, pairs, random.Random(7))
    c = draw_prompts(img, pairs, random.Random(8))
    assert a.tobytes() == b.tobytes() and a.tobytes() != c.tobytes()
