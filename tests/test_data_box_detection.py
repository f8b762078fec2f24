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
from PIL import Image

from vlmkit.errors import ConfigError
from vlmkit_data.box_detection import Detector, detect_boxes, errors_path
from vlmkit_data.box_files import load_box_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts" / "seed_fixtures"))
import mg_llava_boxes  # noqa: E402

TAGS = mg_llava_boxes.TAGS
REFERENCE = ROOT / "tests" / "fixtures" / "seeds" / "mg-llava" / "boxes_reference.json"


@pytest.fixture(scope="module")
def owlv2(tmp_path_factory) -> Path:
    """The tiny detector the MG-LLaVA box reference was made with (scripts/seed_fixtures/mg_llava_boxes.py), as
    saved with the fixture."""
    return REFERENCE.parent / "owlv2-tiny"


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
            assert 0 <= box[0] < box[2] <= w and 0 <= box[1] < box[3] <= h  # clamped, never empty
            assert score >= 0.2 and label in TAGS
        # per-label NMS ran on the UNclamped boxes, as MG-LLaVA's does (test_boxes_kept_are_what_mg_llava_keeps...)
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


def test_boxes_kept_are_what_mg_llava_keeps_in_its_order(owlv2, tmp_path):
    """Against MG-LLaVA's own bbox_nms (run unchanged by scripts/seed_fixtures/mg_llava_boxes.py on the same tiny
    detector): threshold, int(), per-label NMS and the cap on UNclamped boxes; only then the clamp, and boxes
    with no area inside the image dropped and counted."""
    reference = json.loads(REFERENCE.read_text())["images"]
    (tmp_path / "img").mkdir()
    records = []
    for k, image in enumerate(mg_llava_boxes.images()):
        image.save(tmp_path / f"img/{k}.png")
        records.append({"id": f"i{k}", "image": f"img/{k}.png", "tags": mg_llava_boxes.tags_of(k),
                        "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "a"}]})
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    report = detect_boxes(data, tmp_path / "boxes.jsonl", str(owlv2), tags_field="tags", batch_size=3, progress=False)
    ours = {json.loads(line)["id"]: json.loads(line) for line in (tmp_path / "boxes.jsonl").read_text().splitlines()}
    dropped = 0
    suppressed = 0
    for ref in reference:
        w, h = ref["size"]
        want_boxes, want_labels, want_scores = [], [], []
        for box, label, score in zip(ref["boxes"], ref["labels"], ref["scores"]):
            x0, y0, x1, y1 = (min(max(v, 0), lim) for v, lim in zip(box, (w, h, w, h)))
            if x1 <= x0 or y1 <= y0:
                dropped += 1
                continue
            want_boxes.append([x0, y0, x1, y1])
            want_labels.append(label)
            want_scores.append(score)
        got = ours[ref["id"]]
        assert got["boxes"] == want_boxes and got["labels"] == want_labels, ref["id"]
        np.testing.assert_allclose(got["scores"], want_scores, atol=2e-4)
        suppressed += ref["detected"] - len(ref["boxes"])
    assert report.zero_area == dropped > 0  # the reference has boxes wholly in OWLv2's padding
    assert suppressed > 0  # and NMS had boxes to drop: the order is tested, not vacuous


def test_clamping_before_nms_would_keep_other_boxes():
    """Why the order matters: two same-label boxes that overlap only outside the image survive NMS when it runs
    first (MG-LLaVA), but one is suppressed when the clamp runs first."""
    from vlmkit_data.box_detection import mg_llava_order

    boxes = [[-40, 0, 20, 20], [-40, 0, 10, 20]]  # IoU 0.83 as detected; clamped to x >= 0 both grow alike
    kept = mg_llava_order(boxes, [0.9, 0.8], ["cat", "cat"], (100, 100))
    assert len(kept.boxes) == 1  # suppressed, as in MG-LLaVA
    boxes = [[-100, 0, 10, 20], [0, 0, 10, 20]]  # IoU 0.09 as detected; identical after a clamp-first
    kept = mg_llava_order(boxes, [0.9, 0.8], ["cat", "cat"], (100, 100))
    assert kept.boxes == [[0, 0, 10, 20], [0, 0, 10, 20]]  # MG-LLaVA keeps both; clamp-first would drop one


def test_a_resumed_run_reports_totals_from_its_files(owlv2, tmp_path):
    data = _dataset(tmp_path)
    out = tmp_path / "boxes.jsonl"
    first = detect_boxes(data, out, str(owlv2), tags=TAGS, batch_size=2, progress=False)
    assert (first.total_records, first.total_failed) == (3, 1)
    records = [json.loads(line) for line in data.read_text().splitlines()]
    records.append({"id": "gone", "image": "img/missing.png", "conversations": records[0]["conversations"]})
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    again = detect_boxes(data, out, str(owlv2), tags=TAGS, batch_size=2, progress=False)
    assert len(again.failed) == 1 and again.resumed == 4  # only the new failure happened now...
    assert (again.total_records, again.total_failed) == (3, 2)  # ...the report still counts both
    proc = subprocess.run([sys.executable, "-m", "vlmkit_cli", "data", "boxes", str(data), "--out", str(out), "--detector",
                           str(owlv2), "--tags", ",".join(TAGS)], capture_output=True, text=True, timeout=300)
    assert "2 record(s) failed and are not in the box file (2 of them in earlier runs)" in proc.stderr, proc.stderr
