"""The conformance kit over every built-in encoder, objective and dataset (connectors: the sibling
file ``test_conformance_builtin_connectors.py``).

Suites are generated from the registry at collection time, one ``Test<Kind>_<name>`` class per
component, so a plugin added to a vlmkit-* package is checked without touching this file. Each
component is built from its ``tiny_args`` (else ``{"config": "tiny"}`` when it takes a config, else
its defaults); datasets get small input files (and the transform a dataset is meant to be read
with, where its items need one to be trainable).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlmkit.testing import generate_suites, random_images

BUILTIN_DISTRIBUTIONS = ("vlmkit-core", "vlmkit-encoders", "vlmkit-fusion", "vlmkit-objectives", "vlmkit-data",
                         "vlmkit-cli")


def write_llava_json(workdir: Path) -> dict[str, Any]:
    """Three LLaVA records: one image with boxes, text only, two images with boxes."""
    for i, img in enumerate(random_images(3, seed=5)):
        img.save(workdir / f"img{i}.png")
    records = [
        {"id": "one", "image": "img0.png", "boxes": [[[2, 3, 20, 30]]],
         "conversations": [{"from": "human", "value": "<image>\nWhat shape is it?"}, {"from": "gpt", "value": "a circle"}]},
        {"id": "text", "conversations": [{"from": "human", "value": "Say yes"}, {"from": "gpt", "value": "yes"}]},
        {"id": "two", "image": ["img1.png", "img2.png"], "boxes": [[[0, 0, 10, 10]], [[5, 5, 40, 30], [1, 1, 4, 4]]],
         "conversations": [{"from": "human", "value": "<image> or <image>?"}, {"from": "gpt", "value": "left"}]},
    ]
    path = workdir / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return {"path": str(path)}


def write_densefusion(workdir: Path) -> dict[str, Any]:
    """Two DenseFusion caption records, images found as ``{image_id}.png`` next to the file."""
    for i, img in enumerate(random_images(2, seed=7)):
        img.save(workdir / f"df{i}.png")
    records = [{"image_id": f"df{i}", "caption": f"A dense caption of picture {i}.", "url": "http://example.invalid"}
               for i in range(2)]
    path = workdir / "densefusion.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return {"path": str(path)}


def write_vip_mix(workdir: Path) -> dict[str, Any]:
    """A ViP-LLaVA mix: an ordinary LLaVA record, a refcocog region record whose text the ``vip``
    transform writes, and a pointQA record with its conversation."""
    random_images(1, seed=9, size=(96, 80))[0].save(workdir / "v.png")
    records = [
        {"id": "000001", "image": "v.png",
         "conversations": [{"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "blue"}]},
        {"id": "refcocog-train-1", "image": "v.png", "bboxes": [[10, 12, 60, 70]], "answer": "the red square"},
        {"id": "pointQA_twice-general-4", "image": "v.png", "bbox": [20, 20, 50, 60], "question": "What color is it?",
         "answer": "red"},
    ]
    path = workdir / "vip_mix.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return {"path": str(path)}


DATASET_SETUPS: dict[str, dict[str, Any]] = {
    "llava-json": {"make_args": write_llava_json},
    "densefusion": {"make_args": write_densefusion},
    "vip-regions": {"make_args": write_vip_mix, "transforms": ["vip"]},
    "synthetic-shapes": {"make_args": lambda workdir: {"root": str(workdir), "n_train": 6, "n_test": 2,
                                                       "image_size": 32}},
    "synthetic-details": {"make_args": lambda workdir: {"root": str(workdir), "n_train": 6, "n_test": 3,
                                                        "image_size": 64}},
}

ENCODERS = generate_suites(globals(), "encoder", distributions=BUILTIN_DISTRIBUTIONS)
OBJECTIVES = generate_suites(globals(), "objective", distributions=BUILTIN_DISTRIBUTIONS)
DATASETS = generate_suites(globals(), "dataset", distributions=BUILTIN_DISTRIBUTIONS, setups=DATASET_SETUPS)


def test_baseline_plugins_have_suites():
    """The registry-driven generation found the baseline plugins (an empty registry would test nothing)."""
    assert {"TestEncoder_tiny_conv", "TestEncoder_clip"} <= set(ENCODERS)
    assert "TestObjective_lm" in OBJECTIVES
    assert all(globals()[name].__module__ == __name__ for name in ENCODERS + OBJECTIVES + DATASETS)
