"""Synthetic shapes: correct, deterministic answers that are single tokens, loaded by the LLaVA loader and
usable by the processor, collate and a tiny model."""

from __future__ import annotations

import collections
import hashlib
import json
from pathlib import Path

import pytest
import torch

from vlmkit.data.processing import MultimodalProcessor, collate
from vlmkit.data.samples import BOXES, IMAGES
from vlmkit.errors import ConfigError
from vlmkit.model.assembly import build_model
from vlmkit.model.config import ModelConfig
from vlmkit.model.tiny_tokenizer import build_tiny_tokenizer
from vlmkit.plugins.registry import registry
from vlmkit_data.llava_json import LlavaJsonDataset
from vlmkit_data.synthetic import (
    CAPTION_PROMPT,
    CATEGORIES,
    COLORS,
    SHAPES,
    SyntheticShapesDataset,
    answer_vocabulary,
    generate_shapes,
)
from vlmkit_encoders.presets import TINY


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return generate_shapes(tmp_path_factory.mktemp("shapes"), n_train=48, n_test=16, seed=0)


@pytest.fixture(scope="module")
def shapes_with_distractors(tmp_path_factory):
    return generate_shapes(tmp_path_factory.mktemp("hard"), n_train=48, n_test=16, seed=0, distractors=True)


def _digest(root: str) -> str:
    h = hashlib.sha256()
    for p in sorted(Path(root).rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


def test_answers_are_single_tokens_of_the_tiny_tokenizer(shapes):
    tok = build_tiny_tokenizer()
    for word in answer_vocabulary():
        ids = tok(word, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and tok.convert_ids_to_tokens(ids) == [word], word
    for line in Path(shapes["train"]).read_text().splitlines():
        rec = json.loads(line)
        assert rec["answer"] == rec["conversations"][1]["value"] and rec["answer"] in answer_vocabulary()
        question = rec["conversations"][0]["value"]
        assert tok.unk_token_id not in tok(question, add_special_tokens=False)["input_ids"], question


@pytest.mark.parametrize("variant", ["shapes", "shapes_with_distractors"])
def test_records_are_correct_for_their_images(variant, request):
    ds = LlavaJsonDataset(request.getfixturevalue(variant)["train"], progress=False)
    assert len(ds) == 48 and ds.provides == frozenset({IMAGES, BOXES})
    cats = collections.Counter()
    objects_per_category = collections.defaultdict(set)
    for i in range(len(ds)):
        s = ds[i]
        objs, answer, cat = s.meta["objects"], s.meta["answer"], s.meta["category"]
        cats[cat] += 1
        objects_per_category[cat].add(len(objs))
        img = s.images[0]
        assert img.size == (64, 64) and s.turns[0].text.startswith("<image>\n")
        assert 1 <= len(objs) <= 3
        assert len({o["color"] for o in objs}) == len(objs) and len({o["shape"] for o in objs}) == len(objs)
        assert s.boxes[0].tolist() == [o["box"] for o in objs]
        for o in objs:  # the drawn pixels match the annotation: box centre has the object's colour
            x0, y0, x1, y1 = o["box"]
            assert img.getpixel(((x0 + x1) // 2, (y0 + y1) // 2)) == COLORS[o["color"]]
            assert x0 // 16 == (x1 - 1) // 16 and y0 // 16 == (y1 - 1) // 16  # inside one 16 px cell (one token)
            assert x1 - x0 == y1 - y0 == 13  # large within its cell (80 % of its side)
        cells = {(o["box"][0] // 16, o["box"][1] // 16) for o in objs}
        assert len(cells) == len(objs)
        q = s.turns[0].text
        if cat == "color":
            (o,) = [o for o in objs if f"the {o['shape']}?" in q]
            assert answer == o["color"]
        elif cat == "shape":
            (o,) = [o for o in objs if f"the {o['color']} object" in q]
            assert answer == o["shape"]
        elif cat == "position":
            (o,) = [o for o in objs if f"the {o['color']} {o['shape']}" in q]
            cx, cy = (o["box"][0] + o["box"][2]) / 2, (o["box"][1] + o["box"][3]) / 2
            truth = ("left" if cx < 32 else "right") if "left or right" in q else ("top" if cy < 32 else "bottom")
            assert answer == truth
        else:
            assert answer == ["one", "two", "three"][len(objs) - 1]
    assert set(cats) == set(CATEGORIES) and len(set(cats.values())) == 1  # balanced
    assert objects_per_category["count"] == {1, 2, 3}
    for cat in ("color", "shape", "position"):  # attribute questions: one shape unless distractors are asked for
        if variant == "shapes_with_distractors":
            assert objects_per_category[cat] <= {1, 2, 3} and max(objects_per_category[cat]) > 1
        else:
            assert objects_per_category[cat] == {1}
    assert {o["shape"] for i in range(len(ds)) for o in ds.record(i)["objects"]} == set(SHAPES)


def test_deterministic_and_test_split_independent_of_train_size(shapes, tmp_path):
    again = generate_shapes(tmp_path / "a", n_train=48, n_test=16, seed=0)
    assert _digest(again["root"]) == _digest(shapes["root"])
    other = generate_shapes(tmp_path / "b", n_train=5, n_test=16, seed=0)
    assert Path(other["test"]).read_bytes() == Path(shapes["test"]).read_bytes()
    reseeded = generate_shapes(tmp_path / "c", n_train=48, n_test=16, seed=1)
    assert Path(reseeded["train"]).read_bytes() != Path(shapes["train"]).read_bytes()
    train_ids = {json.loads(x)["id"] for x in Path(shapes["train"]).read_text().splitlines()}
    test_ids = {json.loads(x)["id"] for x in Path(shapes["test"]).read_text().splitlines()}
    assert not train_ids & test_ids


def test_dense_captions_name_every_object_with_its_attributes_in_reading_order(shapes, tmp_path):
    tok = build_tiny_tokenizer()
    dense = generate_shapes(tmp_path / "dense", n_train=60, n_test=4, seed=0, style="dense-caption")
    ds = LlavaJsonDataset(dense["train"], progress=False)
    counts = collections.Counter()
    for i in range(len(ds)):
        s = ds[i]
        objs, caption = s.meta["objects"], s.meta["answer"]
        assert s.meta["category"] == "caption" and s.turns[0].text == f"<image>\n{CAPTION_PROMPT}"
        assert s.turns[1].text == caption
        counts[len(objs)] += 1
        img = s.images[0]
        # read the objects back from the pixels (each box's centre colour), row by row, and write the
        # caption the way it must read
        drawn = sorted(objs, key=lambda o: (o["box"][1] // 16, o["box"][0] // 16))
        for o in drawn:
            x0, y0, x1, y1 = o["box"]
            assert img.getpixel(((x0 + x1) // 2, (y0 + y1) // 2)) == COLORS[o["color"]]
        sentences = [f"{['one', 'two', 'three'][len(objs) - 1]} shape{'s' if len(objs) > 1 else ''}"]
        for o in drawn:
            cx, cy = (o["box"][0] + o["box"][2]) / 2, (o["box"][1] + o["box"][3]) / 2
            sentences.append(f"{o['color']} {o['shape']} {'top' if cy < 32 else 'bottom'} {'left' if cx < 32 else 'right'}")
        assert caption == ". ".join(sentences) + "."
        ids = tok(caption, add_special_tokens=False)["input_ids"]
        assert len(ids) == len(caption.replace(".", " .").split())  # a token per word and full stop
    assert set(counts) == {1, 2, 3}
    # the question data is untouched by the caption style: its own folder, its own bytes
    cls = registry.load("dataset", "synthetic-shapes")
    a = cls(root=str(tmp_path / "c"), n_train=8, n_test=4, progress=False)
    b = cls(root=str(tmp_path / "c"), n_train=8, n_test=4, style="dense-caption", progress=False)
    assert a.paths["root"] != b.paths["root"] and b[0].meta["category"] == "caption" and a[0].meta["category"] == "color"
    with pytest.raises(ConfigError, match="style must be one of vqa, dense-caption"):
        cls(root=str(tmp_path / "c"), n_train=8, n_test=4, style="captions")


def test_entry_point_generates_once_then_reuses(tmp_path):
    cls = registry.load("dataset", "synthetic-shapes")
    assert cls is SyntheticShapesDataset
    train = cls(root=str(tmp_path), n_train=12, n_test=4, progress=False)
    test = cls(root=str(tmp_path), split="test", n_train=12, n_test=4, progress=False)
    assert len(train) == 12 and len(test) == 4 and test[0].id.startswith("shapes-test-")
    manifest = Path(train.paths["root"]) / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    cls(root=str(tmp_path), n_train=12, n_test=4, progress=False)
    assert manifest.stat().st_mtime_ns == stamp  # reused, not regenerated
    assert [p.name for p in tmp_path.iterdir()] == [Path(train.paths["root"]).name]  # no temp folders left
    with pytest.raises(ConfigError):
        cls(root=str(tmp_path), split="val", n_train=12, n_test=4)
    with pytest.raises(ConfigError, match="even multiple"):
        generate_shapes(tmp_path / "odd", n_train=1, n_test=1, image_size=48)  # 3 cells a side: no middle-free halves


def test_processor_collate_and_tiny_model_forward(shapes):
    torch.manual_seed(0)
    model = build_model(ModelConfig.from_dict(TINY))
    proc = MultimodalProcessor.for_model(model)
    ds = LlavaJsonDataset(shapes["train"], progress=False)
    samples = [ds[i] for i in range(4)]
    feats = [proc(s.turns, s.images, s.boxes) for s in samples]
    for f, s in zip(feats, samples):
        answer_id = model.tokenizer(s.meta["answer"], add_special_tokens=False)["input_ids"]
        supervised = [t for t in f.labels if t != -100]
        assert supervised == answer_id + [model.tokenizer.eos_token_id]  # the answer token, then </s>
        assert f.boxes["base"][0].shape == (len(s.meta["objects"]), 4)
    batch = collate(feats, model.tokenizer.pad_token_id, views=list(model.views))
    assert batch["pixel_values"]["base"].shape == (4, 3, 64, 64)
    out = model(**batch)
    assert torch.isfinite(out.loss)
    assert [s.num_total for s in out.image_spans] == [16] * 4  # 64 px -> 4x4 tokens per image
    out.loss.backward()
    assert model.encoders[0].stem[0].weight.grad.abs().sum() > 0


def test_the_caption_probe_reads_a_generated_caption_back_into_its_objects(tmp_path):
    """scripts/probe_dense_captions.py scores the DenseFusion claim's caption stage (docs/claims.md) by
    parsing captions; a generated caption must parse back into exactly the drawn objects."""
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "scripts" / "probe_dense_captions.py"
    spec = importlib.util.spec_from_file_location("probe_dense_captions", script)
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    dense = generate_shapes(tmp_path, n_train=30, n_test=1, seed=4, style="dense-caption")
    for line in Path(dense["train"]).read_text().splitlines():
        rec = json.loads(line)
        count, pairs, places = probe.parse_caption(rec["answer"])
        objs = rec["objects"]
        assert count == ["one", "two", "three"][len(objs) - 1]
        assert pairs == {(o["color"], o["shape"]) for o in objs}
        assert places == {("top" if (o["box"][1] + o["box"][3]) / 2 < 32 else "bottom",
                           "left" if (o["box"][0] + o["box"][2]) / 2 < 32 else "right") for o in objs}
    assert probe.parse_caption("garbage") == ("garbage", set(), set())
