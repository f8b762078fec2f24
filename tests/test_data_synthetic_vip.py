"""synthetic-vip (the ViP-LLaVA claim's task): objects of distinct colours, one marked by one of ViP's 8 prompt
shapes; answers read back from the drawn objects, the prompt at the target, and a twin with nothing drawn."""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest
from PIL import Image

from vlmkit.errors import ConfigError
from vlmkit.model.tiny_tokenizer import build_tiny_tokenizer
from vlmkit.plugins.registry import registry
from vlmkit_data.llava_json import LlavaJsonDataset
from vlmkit_data.synthetic import COLORS
from vlmkit_data.synthetic_vip import GRID, OBJECT_COLORS, PROMPT_RGB, QUESTIONS, generate_vip
from vlmkit_data.vip.phrases import SHAPES as PROMPT_SHAPES


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    root = tmp_path_factory.mktemp("vip")
    return (generate_vip(root / "prompts", n_train=48, n_test=8, seed=5),
            generate_vip(root / "none", n_train=48, n_test=8, seed=5, prompts=False))


def _records(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def test_records_answer_about_the_marked_object_and_cycle_over_the_eight_prompt_shapes(twins):
    prompted, bare = twins
    ds = LlavaJsonDataset(prompted["train"], progress=False)
    bare_records = _records(bare["train"])
    tok = build_tiny_tokenizer()
    per_shape = collections.defaultdict(collections.Counter)
    for i in range(len(ds)):
        s = ds[i]
        objs, shape, answer = s.meta["objects"], s.meta["category"], s.meta["answer"]
        kind = s.meta["question_kind"]
        per_shape[shape][kind] += 1
        (target,) = [o for o in objs if o["target"]]
        assert len(objs) == 3 and len({o["color"] for o in objs}) == 3
        assert {o["color"] for o in objs} <= set(OBJECT_COLORS) and "red" not in OBJECT_COLORS
        # each object's own colour is drawn in its box (read from the twin: a mask prompt tints all the target)
        img = np.asarray(Image.open(f"{bare['root']}/{bare_records[i]['image']}"))
        for o in objs:
            x0, y0, x1, y1 = o["box"]
            assert (img[y0:y1, x0:x1].reshape(-1, 3) == COLORS[o["color"]]).all(-1).mean() > 0.4
        question = s.turns[0].text
        assert answer == target[kind] == s.turns[1].text and f"What {kind} is the object" in question
        assert shape.split()[-1] in question and "red" in question
        ids = tok(question.replace("<image>\n", ""), add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids  # every word of every prompt phrase is in the tiny vocabulary
        assert len(tok(answer, add_special_tokens=False)["input_ids"]) == 1
    assert set(per_shape) == set(PROMPT_SHAPES)
    assert all(set(c) == set(QUESTIONS) for c in per_shape.values())  # both questions for every shape


def test_the_prompt_is_drawn_at_the_target_and_the_twin_has_nothing_drawn(twins):
    prompted, bare = twins
    a, b = _records(prompted["train"]), _records(bare["train"])
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        # same record, question and answer: only the image differs
        assert {k: v for k, v in ra.items() if k != "prompt_drawn"} == {k: v for k, v in rb.items() if k != "prompt_drawn"}
        ia = np.asarray(Image.open(f"{prompted['root']}/{ra['image']}")).astype(int)
        ib = np.asarray(Image.open(f"{bare['root']}/{rb['image']}")).astype(int)
        assert not (ib == PROMPT_RGB).all(-1).any()  # nothing red in the twin
        diff = np.abs(ia - ib).sum(-1) > 0
        assert diff.any(), ra["category"]
        (target,) = [o for o in ra["objects"] if o["target"]]
        x0, y0, x1, y1 = target["box"]
        cell = 128 // GRID
        ys, xs = np.nonzero(diff)
        if ra["category"] == "arrow":  # the arrow comes from outside; its tip touches the target's box
            near = (xs >= x0 - 4) & (xs <= x1 + 4) & (ys >= y0 - 4) & (ys <= y1 + 4)
            assert near.any()
        else:  # every other prompt lies on or around the target, inside its cell
            assert (xs.mean() // cell, ys.mean() // cell) == (x0 // cell, y0 // cell), ra["category"]


def test_entry_point_generates_once_per_twin_and_refuses_bad_arguments(tmp_path):
    cls = registry.load("dataset", "synthetic-vip")
    ds = cls(root=str(tmp_path), n_train=8, n_test=8, progress=False)
    bare = cls(root=str(tmp_path), split="test", n_train=8, n_test=8, prompts=False, progress=False)
    assert len(ds) == 8 and len(bare) == 8 and bare[0].id.startswith("vip-test-")
    assert ds.paths["root"].endswith("-prompts") and bare.paths["root"].endswith("-noprompts")
    assert [bare[i].meta["category"] for i in range(8)] == list(PROMPT_SHAPES)
    with pytest.raises(ConfigError, match="split must be one of"):
        cls(root=str(tmp_path), split="val", n_train=8, n_test=8)
    with pytest.raises(ConfigError, match="n_objects"):
        generate_vip(tmp_path / "bad", n_train=1, n_test=1, n_objects=5)
    with pytest.raises(ConfigError, match="image_size"):
        generate_vip(tmp_path / "bad", n_train=1, n_test=1, image_size=126)
    # a string where a switch belongs would draw the prompts in the twin that must have none
    with pytest.raises(ConfigError, match="prompts must be true or false, got 'false'"):
        cls(root=str(tmp_path), n_train=8, n_test=8, prompts="false", progress=False)
    with pytest.raises(ConfigError, match="n_objects must be a whole number"):
        generate_vip(tmp_path / "bad", n_train=1, n_test=1, n_objects=2.0)
