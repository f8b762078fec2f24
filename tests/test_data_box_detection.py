"""`vlmkit data boxes`: MG-LLaVA box files from an open-vocabulary detector (a tiny random OWLv2).

The detector is built from a config (no download); its class head's shift is raised so that every
query scores high, which makes the threshold, NMS and caps do visible work on random weights. Checked:
the file is what the mg-llava preset reads, MG-LLaVA's filter holds, failures are named not dropped,
and an interrupted run resumes without detecting a finished image again.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vlmkit.errors import ConfigError
from vlmkit_data.box_detection import Detector, detect_boxes, errors_path
from vlmkit_data.box_files import load_box_file

TAGS = ["cat", "dog", "car"]


@pytest.fixture(scope="module")
def owlv2(tmp_path_factory) -> Path:
    from transformers import CLIPTokenizer, Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    root = tmp_path_factory.mktemp("owlv2")
    # id 0 stays unused: OWL masks out a query whose first token id is 0 (its padding convention)
    vocab = {"!": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(root / "vocab.json"), str(root / "merges.txt"), pad_token="<|endoftext|>")
    text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=16, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=64,
                  patch_size=16)
    torch.manual_seed(0)
    model = Owlv2ForObjectDetection(Owlv2Config(text_config=text, vision_config=vision, projection_dim=32)).eval()
    with torch.no_grad():
        model.class_head.logit_shift.bias.fill_(4.0)  # every query scores ~0.9+: the filters have work to do
    model.save_pretrained(root / "model")
    Owlv2Processor(image_processor=Owlv2ImageProcessor(size={"height": 64, "width": 64}), tokenizer=tok).save_pretrained(
        root / "model")
    return root / "model"


def _dataset(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    records = []
    for k, size in enumerate([(80, 50), (64, 64), (40, 90)]):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(tmp_path / f"img/{k}.png")
        records.append({"id": f"s{k}", "image": f"img/{k}.png", "tags": TAGS[:k + 1],
                        "conversations": [{"from": "human", "value": "<image>\nWhat is it?"},
                                          {"from": "gpt", "value": "a cat"}]})
    (tmp_path / "img/bad.png").write_bytes(b"not a png")
    records.insert(1, {"id": "broken", "image": "img/bad.png", "conversations": records[0]["conversations"]})
    records.append({"id": "text", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]})
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    return data


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def test_box_file_is_what_the_mg_llava_preset_reads_and_follows_its_filter(owlv2, tmp_path):
    data = _dataset(tmp_path)
    out = tmp_path / "boxes.jsonl"
    report = detect_boxes(data, out, str(owlv2), tags=TAGS, batch_size=2, progress=False)
    assert (report.written, report.without_image, len(report.failed)) == (3, 1, 1)
    records = load_box_file(out)  # the reader the mg-llava preset uses
    assert set(records) == {"s0", "s1", "s2"}
    sizes = {"s0": (80, 50), "s1": (64, 64), "s2": (40, 90)}
    raw = {json.loads(line)["id"]: json.loads(line) for line in out.read_text().splitlines()}
    for rid, rec in raw.items():
        assert rec["boxes"], f"{rid}: the raised class head must give boxes"
        w, h = sizes[rid]
        for box, score, label in zip(rec["boxes"], rec["scores"], rec["labels"]):
            assert all(isinstance(v, int) for v in box)  # MG-LLaVA's int pixels of the ORIGINAL image
            assert 0 <= box[0] <= box[2] <= w and 0 <= box[1] <= box[3] <= h
            assert score >= 0.2 and label in TAGS
        for i in range(len(rec["boxes"])):  # per-label NMS at IoU 0.2
            for j in range(i + 1, len(rec["boxes"])):
                if rec["labels"][i] == rec["labels"][j]:
                    assert _iou(rec["boxes"][i], rec["boxes"][j]) <= 0.2 + 1e-6
    # the broken image is named, with its reason, outside the box file
    errors = [json.loads(line) for line in errors_path(out).read_text().splitlines()]
    assert [e["id"] for e in errors] == ["broken"] and "cannot decode image" in errors[0]["reason"]


def test_a_higher_threshold_keeps_fewer_boxes_all_above_it(owlv2, tmp_path):
    data = _dataset(tmp_path)
    low = detect_boxes(data, tmp_path / "low.jsonl", str(owlv2), tags=TAGS, threshold=0.2, progress=False)
    high = detect_boxes(data, tmp_path / "high.jsonl", str(owlv2), tags=TAGS, threshold=0.985, progress=False)
    assert high.boxes < low.boxes
    for line in (tmp_path / "high.jsonl").read_text().splitlines():
        assert all(s >= 0.985 - 1e-4 for s in json.loads(line)["scores"])


def test_per_image_tags_from_a_record_field(owlv2, tmp_path):
    data = _dataset(tmp_path)
    detect_boxes(data, tmp_path / "b.jsonl", str(owlv2), tags_field="tags", progress=False)
    for line in (tmp_path / "b.jsonl").read_text().splitlines():
        rec = json.loads(line)
        allowed = TAGS[:int(rec["id"][1:]) + 1]
        assert set(rec["labels"]) <= set(allowed)
    with pytest.raises(ConfigError, match="either a tag vocabulary"):
        detect_boxes(data, tmp_path / "c.jsonl", str(owlv2), progress=False)


class Counting(Detector):
    def __init__(self, path):
        super().__init__(path, "cpu")
        self.seen: list[int] = []

    def __call__(self, images, labels, threshold):
        self.seen.append(len(images))
        return super().__call__(images, labels, threshold)


def test_an_interrupted_run_resumes_without_detecting_finished_images_again(owlv2, tmp_path):
    data = _dataset(tmp_path)
    ref = tmp_path / "ref.jsonl"
    detect_boxes(data, ref, str(owlv2), tags=TAGS, batch_size=1, progress=False)

    out = tmp_path / "run.jsonl"

    def stop(done):
        if done >= 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        detect_boxes(data, out, str(owlv2), tags=TAGS, batch_size=1, progress=False, on_batch=stop)
    assert len(out.read_text().splitlines()) == 1
    with open(out, "a") as f:  # a kill in the middle of the next line
        f.write('{"id": "s1", "boxes": [[1, 2')
    det = Counting(str(owlv2))
    report = detect_boxes(data, out, det, tags=TAGS, batch_size=1, progress=False)
    assert sum(det.seen) == 2 and report.resumed == 1  # s1 (cut short) and s2; s0 was done
    assert load_box_file(out).keys() == load_box_file(ref).keys()
    got = sorted(out.read_text().splitlines())
    assert got == sorted(ref.read_text().splitlines())  # the same file an uninterrupted run writes
    # the broken image is reported once, not again on resume
    assert [json.loads(x)["id"] for x in errors_path(out).read_text().splitlines()] == ["broken"]


def test_command_line_boxes_then_preview(owlv2, tmp_path):
    data = _dataset(tmp_path)
    cli = [sys.executable, "-m", "vlmkit_cli"]
    proc = subprocess.run([*cli, "data", "boxes", str(data), "-o", str(tmp_path / "b.jsonl"), "--detector", str(owlv2),
                           "--tags", "cat,dog,car", "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["written"] == 3 and report["failed"] == 1 and report["failed_records"][0]["id"] == "broken"
    shown = subprocess.run([*cli, "data", "preview", str(data), "--boxes", str(tmp_path / "b.jsonl"), "-o",
                            str(tmp_path / "p.png"), "--json"], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert Image.open(tmp_path / "p.png").size[0] > 0
    bad = subprocess.run([*cli, "data", "boxes", str(data), "-o", str(tmp_path / "x.jsonl"), "--detector",
                          str(tmp_path / "nope"), "--tags", "cat"], capture_output=True, text=True)
    assert bad.returncode != 0 and "--detector" in bad.stderr and "Traceback" not in bad.stderr


def test_raw_llava_data_to_a_trained_mg_llava_style_model(owlv2, tmp_path):
    """The documented path: `vlmkit data boxes`, then training with the box file joined by id (object
    tokens from RoI pooling on the high-res encoder, Conv-Gate fusion), on records that carry no boxes."""
    from vlmkit.model.checkpoint import load_checkpoint
    from vlmkit.training.recipe import parse_recipe
    from vlmkit.training.runner import run_recipe
    from vlmkit_data.llava_json import LlavaJsonDataset

    data = _dataset(tmp_path)
    lines = [json.loads(x) for x in data.read_text().splitlines()]
    good = tmp_path / "good.jsonl"  # the broken image is dropped by the user, after reading the errors file
    good.write_text("".join(json.dumps(r) + "\n" for r in lines if r["id"] != "broken"))
    boxes = tmp_path / "boxes.jsonl"
    detect_boxes(good, boxes, str(owlv2), tags=TAGS, progress=False)
    ds = LlavaJsonDataset(str(good), box_file=str(boxes))
    assert ds[0].boxes[0].shape[1] == 4 and len(ds[0].boxes[0]) > 0 and ds[3].boxes == []  # text-only: none
    model = {"encoders": [{"name": "tiny-conv", "args": {"width": 32}},
                          {"name": "tiny-conv", "args": {"width": 48, "image_size": 128, "view": "hires"}}],
             "fusion": [{"name": "roi", "args": {"stream": 1, "output_size": 7}}, "convgate"],
             "connector": "mlp2x_gelu", "llm": {"name": "tiny-llama", "args": {"hidden_size": 32}}, "max_length": 512}
    stage = {"name": "sft", "trainable": ["connector", "fusion", "llm"], "lr": 1e-3, "max_steps": 2, "batch_size": 2,
             "logging_steps": 1, "save_steps": 100, "warmup_ratio": 0.0, "schedule": "linear",
             "data": {"dataset": "llava-json", "template": "vicuna_v1", "resize": "pad",
                      "args": {"path": str(good), "box_file": str(boxes)}}}
    final = run_recipe(parse_recipe({"model": model, "output_dir": str(tmp_path / "run"), "seed": 0,
                                     "stages": [stage]}))
    history = json.loads((final / "log_history.json").read_text())
    assert [h["step"] for h in history if "loss" in h] == [1, 2]
    assert load_checkpoint(final).config.fusion[0].name.endswith("roi")
