"""synthetic-details: the stripes are there at the native size and gone at half of it, through vlmkit's own
image view, which is what makes it a test of resolution (the ConvLLaVA and S2 claims)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from vlmkit.data.image_processing import preprocess
from vlmkit.errors import ConfigError
from vlmkit.model.contracts import ImageView
from vlmkit_data.synthetic_details import CATEGORIES, draw_square, generate_details


def _pair(horizontal: bool, size: int = 256):
    side = size // 4
    return [Image.fromarray(draw_square(size, 64 if size == 256 else 32, 32, side, (220, 30, 30), striped, horizontal))
            for striped in (True, False)]


@pytest.mark.parametrize("horizontal", [True, False])
def test_at_half_size_striped_and_plain_are_the_same_picture_to_within_rounding(horizontal):
    striped, plain = _pair(horizontal)
    half = ImageView("v", 128, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), resize="pad")
    a, _ = preprocess(striped, half, None)
    b, _ = preprocess(plain, half, None)
    assert (a - b).abs().max() < 0.1  # 0.1 normalised = 6/255: uint8 rounding, not stripes
    full = ImageView("v", 256, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), resize="pad")
    a, _ = preprocess(striped, full, None)
    b, _ = preprocess(plain, full, None)
    assert (a - b).abs().max() > 1.5  # at the native size the stripes are full contrast


def test_the_squares_mean_colour_is_the_same_striped_or_plain():
    striped, plain = (np.asarray(im, dtype=float)[32:96, 64:128] for im in _pair(True))
    assert np.abs(striped.mean((0, 1)) - plain.mean((0, 1))).max() < 1.0


def test_generated_records_are_balanced_and_answer_from_the_drawn_square(tmp_path):
    paths = generate_details(tmp_path, n_train=60, n_test=12, seed=3, image_size=128)
    rows = [json.loads(line) for line in open(paths["train"])]
    assert [r["category"] for r in rows[:3]] == list(CATEGORIES) and len(rows) == 60
    for r in rows:
        sq = r["square"]
        if r["category"] == "detail":
            assert r["answer"] == ("yes" if sq["striped"] else "no")
        elif r["category"] == "color":
            assert r["answer"] == sq["color"]
        else:
            x0, y0, x1, _ = sq["box"]
            assert r["answer"] == ("left" if (x0 + x1) / 2 < 64 else "right") and x0 % 32 == 0 and y0 % 32 == 0
        img = np.asarray(Image.open(tmp_path / r["image"]), dtype=int)
        x0, y0, x1, y1 = sq["box"]
        inner = img[y0 + 12:y1 - 12, x0 + 12:x1 - 12]
        rows_differ = np.abs(np.diff(inner, axis=0)).max() > 50
        cols_differ = np.abs(np.diff(inner, axis=1)).max() > 50
        assert (rows_differ or cols_differ) == sq["striped"]
        if sq["striped"]:
            assert rows_differ == sq["horizontal"] and cols_differ != sq["horizontal"]
    answers = {r["answer"] for r in rows if r["category"] == "detail"}
    assert answers == {"yes", "no"}
    with pytest.raises(ConfigError, match="image_size"):
        generate_details(tmp_path / "bad", image_size=40)
