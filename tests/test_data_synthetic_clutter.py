"""synthetic-clutter (the MG-LLaVA claim's task): one small coloured object among grey ones, its answers read
back from the pixels, its boxes those of every drawn object, and its detail gone at the low resolution."""

from __future__ import annotations

import collections

import numpy as np
import pytest
from PIL import Image

from vlmkit.errors import ConfigError
from vlmkit.model.tiny_tokenizer import build_tiny_tokenizer
from vlmkit.plugins.registry import registry
from vlmkit_data.llava_json import LlavaJsonDataset
from vlmkit_data.synthetic import COLORS
from vlmkit_data.synthetic_clutter import CATEGORIES, CLUTTER, GREY, OBJECT_SIZE, generate_clutter


@pytest.fixture(scope="module")
def clutter(tmp_path_factory):
    return generate_clutter(tmp_path_factory.mktemp("clutter"), n_train=60, n_test=12, seed=3)


def test_records_answer_from_the_drawn_target_and_box_every_object(clutter):
    ds = LlavaJsonDataset(clutter["train"], boxes=True, progress=False)
    tok = build_tiny_tokenizer()
    cats = collections.Counter()
    for i in range(len(ds)):
        s = ds[i]
        objs, cat, answer = s.meta["objects"], s.meta["category"], s.meta["answer"]
        cats[cat] += 1
        img = np.asarray(s.images[0])
        assert img.shape == (128, 128, 3)
        (target,) = [o for o in objs if o["target"]]
        assert CLUTTER[0] <= len(objs) - 1 <= CLUTTER[1]
        assert s.boxes[0].tolist() == [o["box"] for o in objs]  # every object, target and clutter alike
        cells = set()
        for o in objs:
            x0, y0, x1, y1 = o["box"]
            assert x1 - x0 == y1 - y0 == OBJECT_SIZE and x0 // 16 == (x1 - 1) // 16 and y0 // 16 == (y1 - 1) // 16
            cells.add((x0 // 16, y0 // 16))
            # the drawn pixels inside the box are the object's colour: saturated for the target, grey otherwise
            want = COLORS[o["color"]] if o["target"] else GREY
            patch = img[y0:y1, x0:x1].reshape(-1, 3)
            painted = [tuple(p) for p in patch if tuple(p) != (255, 255, 255)]
            assert painted and set(painted) == {want}, (o, set(painted))
        assert len(cells) == len(objs)  # one object per cell
        # nothing coloured outside the target's box
        mask = np.ones(img.shape[:2], bool)
        x0, y0, x1, y1 = target["box"]
        mask[y0:y1, x0:x1] = False
        outside = img[mask]
        assert not any(tuple(p) == COLORS[target["color"]] for p in outside[::7])
        truth = {"shape": target["shape"], "color": target["color"],
                 "position": "left" if (x0 + x1) / 2 < 64 else "right"}[cat]
        assert answer == truth == s.turns[1].text
        assert len(tok(answer, add_special_tokens=False)["input_ids"]) == 1
    assert set(cats) == set(CATEGORIES) and len(set(cats.values())) == 1


def test_at_the_low_resolution_the_target_is_four_pixels_wide(clutter):
    """The reason for the task: the 64 px stream sees the 8 px target as a 4 px blob (5 px with the resize
    filter's spill), one sixteenth of one of its 16 px patches."""
    ds = LlavaJsonDataset(clutter["test"], boxes=True, progress=False)
    for i in range(len(ds)):
        s = ds[i]
        (target,) = [o for o in s.meta["objects"] if o["target"]]
        small = np.asarray(s.images[0].resize((64, 64), Image.BICUBIC)).astype(int)
        saturated = small.max(-1) - small.min(-1) > 40  # grey clutter and white have none: only the target
        ys, xs = np.nonzero(saturated)
        assert len(ys) and ys.max() - ys.min() + 1 <= 5 and xs.max() - xs.min() + 1 <= 5


def test_entry_point_generates_once_and_refuses_bad_arguments(tmp_path):
    cls = registry.load("dataset", "synthetic-clutter")
    ds = cls(root=str(tmp_path), n_train=6, n_test=3, progress=False)
    test = cls(root=str(tmp_path), split="test", n_train=6, n_test=3, progress=False)
    assert len(ds) == 6 and len(test) == 3 and test[0].id.startswith("clutter-test-")
    assert ds[0].boxes is not None
    with pytest.raises(ConfigError, match="split must be one of"):
        cls(root=str(tmp_path), split="val", n_train=6, n_test=3)
    with pytest.raises(ConfigError, match="even multiple of 16"):
        generate_clutter(tmp_path / "bad", n_train=1, n_test=1, image_size=120)
