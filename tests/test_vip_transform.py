"""The ``vip`` transform end to end: reproducible, configurable, and usable from a ViP mix file."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from PIL import Image
from test_vip_records import BOX4, RECORDS, make

from vlmkit.data.templates import IMAGE_TOKEN
from vlmkit.errors import ConfigError, DataError
from vlmkit_data.vip import SHAPES, VisualPromptTransform, prompt_inference_image
from vlmkit_data.vip.dataset import VipRegionDataset
from vlmkit_data.vip.drawing import ALPHA_RANGE, MASK_ALPHA_RANGE


def test_same_seed_same_sample_other_seed_other_sample():
    t = VisualPromptTransform()
    for rid, fields in RECORDS.values():
        a, b = t(make(rid, fields), random.Random(11)), t(make(rid, fields), random.Random(11))
        assert a.images[0].tobytes() == b.images[0].tobytes() and a.turns == b.turns
        assert a.meta["visual_prompts"] == b.meta["visual_prompts"]
    rid, fields = RECORDS["refcocog"]
    pics = {t(make(rid, fields), random.Random(s)).images[0].tobytes() for s in range(8)}
    assert len(pics) == 8


def test_alpha_ranges_of_drawn_prompts():
    rid, fields = RECORDS["refcocog"]
    by_shape: dict[str, list[int]] = {}
    for seed in range(300):
        (p,) = VisualPromptTransform()(make(rid, fields), random.Random(seed)).meta["visual_prompts"]
        by_shape.setdefault(p["shape"], []).append(p["alpha"])
    assert set(by_shape) == set(SHAPES)  # refcocog allows all 8 shapes
    for shape, alphas in by_shape.items():
        lo, hi = MASK_ALPHA_RANGE if shape == "mask" else ALPHA_RANGE
        assert lo <= min(alphas) and max(alphas) <= hi, shape


@pytest.mark.parametrize("shape", SHAPES)
def test_shape_override_without_polygons(shape):
    rid, fields = RECORDS["refcocog"]
    fields = {k: v for k, v in fields.items() if k != "segmentations"}  # no polygons: every shape uses the box
    out = VisualPromptTransform(shapes=[shape], alpha=255)(make(rid, fields), random.Random(0))
    (p,) = out.meta["visual_prompts"]
    assert p["shape"] == shape and p["alpha"] == 255
    arr = np.asarray(out.images[0])
    assert (arr == np.array(p["rgb"], np.uint8)).all(-1).sum() > 10  # opaque pixels of exactly the prompt colour


def test_constant_style_and_fixed_width():
    rid, fields = RECORDS["v7w"]  # v7w: rectangles, constant style
    img_size = (672, 448)
    out = VisualPromptTransform(alpha=255)(make(rid, fields, size=img_size), random.Random(0))
    arr = np.asarray(out.images[0])
    x1, y1, x2, y2 = BOX4[0]
    rgb = np.array(out.meta["visual_prompts"][0]["rgb"], np.uint8)
    column = (arr[:, x1 + 20] == rgb).all(-1)  # a vertical cut through the top edge: int(3 * 2) = 6 px thick
    assert column[y1:y1 + 6].all() and not column[y1 + 6]
    out = VisualPromptTransform(alpha=255, width=2)(make(rid, fields, size=img_size), random.Random(0))
    column = (np.asarray(out.images[0])[:, x1 + 20] == rgb).all(-1)
    assert column[y1:y1 + 2].all() and not column[y1 + 2]


def test_bad_arguments():
    with pytest.raises(ConfigError, match="unknown shape"):
        VisualPromptTransform(shapes=["star"])
    with pytest.raises(ConfigError, match="alpha"):
        VisualPromptTransform(alpha=300)


def test_inference_prompt():
    img = Image.new("RGB", (640, 480), (255, 255, 255))
    out, text = prompt_inference_image(img, "100,120,300,260", "arrow", "red")
    assert text == "pointed to by the red arrow" and out.size == (640, 480)
    out, text = prompt_inference_image(img, "100,120,300,260", "rectangle", "10,20,30", alpha=255)
    assert text == "within the rectangle" and tuple(np.asarray(out)[120, 200]) == (10, 20, 30)
    _, text = prompt_inference_image(img, [100, 120, 300, 260], "point", "#0000ff")
    assert text == "at the blue point"
    for bad in ("1,2,3", "10,10,5,5", "0,0,700,10"):
        with pytest.raises(ConfigError, match="vip: bbox"):
            prompt_inference_image(img, bad, "rectangle")
    with pytest.raises(ConfigError, match="vip: shape"):
        prompt_inference_image(img, "1,1,5,5", "star")


def test_transform_with_a_bbox_prompts_any_sample_at_inference():
    """``vlmkit generate --transform '{name: vip, args: {bbox: ...}}'``: one prompt drawn on the first
    image of a plain sample, and ``{region}`` replaced by its phrase; the same seed draws the same image."""

    from vlmkit.data.samples import Sample
    from vlmkit.data.templates import Turn

    img = Image.new("RGB", (120, 80), (255, 255, 255))
    sample = Sample(id="prompt", turns=[Turn("user", "<image>\nWhat is {region}?")], images=[img])
    vip = VisualPromptTransform(bbox=[20, 10, 60, 50], shapes=["rectangle"], color="red", alpha=255, width=3)
    out = vip(sample, random.Random(0))
    assert out.turns[0].text == "<image>\nWhat is within the red rectangle?"
    drawn = out.images[0]
    assert drawn.size == (120, 80) and drawn.getpixel((20, 30)) == (255, 0, 0) and drawn.getpixel((40, 30)) == (255, 255, 255)
    assert out.meta["visual_prompts"][0]["phrase"] == "within the red rectangle"
    assert img.getpixel((20, 30)) == (255, 255, 255)  # the caller's image is not drawn on
    ellipse = VisualPromptTransform(bbox=[20, 10, 60, 50], shapes=["ellipse"])
    a, b = ellipse(sample, random.Random(1)), ellipse(sample, random.Random(1))
    assert np.array_equal(np.asarray(a.images[0]), np.asarray(b.images[0]))

    with pytest.raises(ConfigError, match="one shape"):
        VisualPromptTransform(bbox=[1, 1, 5, 5], shapes=["rectangle", "ellipse"])
    with pytest.raises(ConfigError, match="vip: bbox"):
        VisualPromptTransform(bbox=[1, 1, 5])
    with pytest.raises(ConfigError, match="give bbox too"):
        VisualPromptTransform(polygons=[[1, 1, 5, 5, 3, 8]])
    with pytest.raises(ConfigError, match="outside"):
        vip(Sample(id="small", turns=sample.turns, images=[Image.new("RGB", (30, 30))]), random.Random(0))
    with pytest.raises(DataError, match="has none"):
        vip(Sample(id="text", turns=[Turn("user", "hi")]), random.Random(0))


def test_mix_file_through_dataset_transform_and_processor(tmp_path):
    """A ViP mix: an ordinary LLaVA record, a refcocog record without conversations, a v7w record."""
    from vlmkit.data.processing import MultimodalProcessor
    from vlmkit.model.assembly import build_model
    from vlmkit.model.config import ModelConfig

    Image.new("RGB", (320, 240), (90, 140, 200)).save(tmp_path / "a.png")
    records = [
        {"id": "000001", "image": "a.png",
         "conversations": [{"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "blue"}]},
        {"id": "refcocog-train-1", "image": "a.png", **RECORDS["refcocog"][1]},
        {"id": "v7w-train-3", "image": "a.png", **RECORDS["v7w"][1],
         "conversations": [{"from": "human", "value": "<image>\nx"}, {"from": "gpt", "value": "y"}]},
    ]
    path = tmp_path / "mix.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    ds = VipRegionDataset(str(path))
    assert len(ds) == 3 and "regions" not in ds.provides  # only region records carry regions (in meta)
    lengths = ds.modality_lengths()
    assert lengths[1] > 0  # the placeholder carries the answer's words
    cfg = ModelConfig.from_dict({"encoders": [{"name": "tiny-conv", "args": {"image_size": 32, "width": 32}}],
                                 "connector": "mlp2x_gelu", "max_length": 1024,
                                 "llm": {"name": "tiny-llama", "args": {"hidden_size": 64, "num_layers": 1}}})
    proc = MultimodalProcessor.for_model(build_model(cfg))
    t = VisualPromptTransform()
    for i in range(3):
        sample = t(ds[i], random.Random(i))
        assert sample.turns[0].text.startswith(IMAGE_TOKEN)
        feats = proc(sample.turns, sample.images, sample.boxes)
        assert any(label != -100 for label in feats.labels) and feats.num_images == 1
    assert ds[0].turns[1].text == "blue" and t(ds[0], random.Random(0)).images[0].tobytes() == ds[0].images[0].tobytes()
    assert t(ds[1], random.Random(0)).turns[1].text == "the man in a red shirt"


def test_mix_file_unknown_type_fails_with_its_line(tmp_path):
    from vlmkit.errors import DataError

    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    path = tmp_path / "mix.jsonl"
    path.write_text("\n" + json.dumps({"id": "refcoco-x-1", "image": "a.png", "bboxes": [[1, 1, 5, 5]],
                                        "conversations": [{"from": "human", "value": "q"},
                                                          {"from": "gpt", "value": "a"}]}) + "\n")
    with pytest.raises(DataError, match="not a region type") as err:
        VipRegionDataset(str(path))[0]
    assert err.value.line == 2 and err.value.record_id == "refcoco-x-1"
