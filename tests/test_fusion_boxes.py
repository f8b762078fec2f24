"""MG-LLaVA box files: per-label NMS and caps, loading (JSON list / JSONL), the id join and missing ids,
and the coordinate path from original pixels to the 768 view."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vlmkit.data.image_processing import transform_image
from vlmkit.data.samples import BOXES, IMAGES, Sample, SampleSource, provides
from vlmkit.data.templates import Turn
from vlmkit.errors import ConfigError, DataError
from vlmkit.model.contracts import ImageView
from vlmkit_data.box_files import BoxJoin, filter_boxes, load_box_file


# -- filtering ------------------------------------------------------------------------------------
def test_nms_is_per_label_at_iou_0_2():
    boxes = [[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 13]]
    scores = [0.9, 0.8, 0.7, 0.6, 0.95]
    labels = ["cat", "cat", "dog", "cat", "dog"]
    b, s, lab = filter_boxes(boxes, scores, labels)
    # cat: box 1 overlaps box 0 (IoU 0.82) and is removed; dog: box 2 overlaps box 4 (IoU 0.77) and is removed
    assert lab == ["dog", "cat", "cat"]
    assert np.allclose(s, [0.95, 0.9, 0.6])
    assert np.array_equal(b, np.asarray([[0, 0, 10, 13], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32))
    # IoU just below 0.2 survives: [0,0,10,10] vs [8,0,18,10]: 20/180 = 0.11
    _, _, lab2 = filter_boxes([[0, 0, 10, 10], [8, 0, 18, 10]], [0.5, 0.4], ["a", "a"])
    assert lab2 == ["a", "a"]


def _grid_boxes(n_labels, per_label):
    """Non-overlapping boxes, n_labels x per_label, scores decreasing within each label."""
    boxes, scores, labels = [], [], []
    for lab in range(n_labels):
        for j in range(per_label):
            x, y = 20 * j, 20 * lab
            boxes.append([x, y, x + 10, y + 10])
            scores.append(1.0 - 0.001 * j - 0.0001 * lab)
            labels.append(f"l{lab}")
    return boxes, scores, labels


def test_per_label_cap_only_when_over_the_limit():
    boxes, scores, labels = _grid_boxes(4, 30)  # 120 boxes > 100 after NMS: top-20 per label
    b, s, lab = filter_boxes(boxes, scores, labels)
    assert len(b) == 80 and all(lab.count(f"l{i}") == 20 for i in range(4))
    kept_scores = sorted(s.tolist(), reverse=True)
    assert np.allclose(s, kept_scores)  # best first
    assert min(s[[i for i, x in enumerate(lab) if x == "l0"]]) == pytest.approx(1.0 - 0.001 * 19)
    b, _, _ = filter_boxes(*_grid_boxes(4, 25))  # exactly 100: no cap
    assert len(b) == 100
    # no global cap: many labels keep more than the limit
    b, _, lab = filter_boxes(*_grid_boxes(12, 20))
    assert len(b) == 240
    b, _, _ = filter_boxes(*_grid_boxes(12, 20), max_total=100)
    assert len(b) == 100


def test_limit_50_is_defined():
    boxes, scores, labels = _grid_boxes(3, 30)  # 90 > 50
    b, _, lab = filter_boxes(boxes, scores, labels, limit=50, per_label_when_over_limit=None)
    assert len(b) == 60 and lab.count("l0") == 20  # the original's undefined case: 20 per label
    b, _, _ = filter_boxes(boxes, scores, labels, limit=40, per_label_when_over_limit=None)
    assert len(b) == 15  # below 50: 5 per label, as in the original
    b, _, lab = filter_boxes(boxes, scores, labels, per_label=1)
    assert lab == ["l0", "l1", "l2"]


def test_filter_empty_and_mismatched():
    b, s, lab = filter_boxes([], [], [])
    assert b.shape == (0, 4) and s.shape == (0,) and lab == []
    with pytest.raises(ValueError, match="2 boxes, 1 scores"):
        filter_boxes([[0, 0, 1, 1], [0, 0, 2, 2]], [0.1], ["a", "b"])


# -- loading --------------------------------------------------------------------------------------
RECORDS = [
    {"id": 1, "boxes": [[100, 50, 200, 150], [0, 0, 10, 10]], "scores": [0.9, 0.3], "labels": ["dog", "ball"]},
    {"id": "b", "boxes": [], "scores": [], "labels": []},
]


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_load_json_list_and_jsonl(tmp_path, fmt):
    path = tmp_path / f"boxes.{fmt}"
    if fmt == "json":
        path.write_text(json.dumps(RECORDS, indent=1))
    else:
        path.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n\n")
    recs = load_box_file(path)
    assert set(recs) == {"1", "b"}  # keyed by str(id)
    assert recs["1"].boxes.shape == (2, 4) and recs["1"].labels == ["dog", "ball"]
    assert len(recs["b"]) == 0 and recs["b"].boxes.shape == (0, 4)


@pytest.mark.parametrize("record,field", [
    ({"boxes": [], "scores": [], "labels": []}, "id"),
    ({"id": 3, "boxes": [[1, 2, 3]], "scores": [0.1], "labels": ["a"]}, "boxes"),
    ({"id": 3, "boxes": [[1, 2, 3, 4]], "scores": [], "labels": ["a"]}, "scores"),
    ({"id": 3, "boxes": [[1, 2, 3, 4]], "scores": [0.2], "labels": "a"}, "labels"),
    ({"id": 3, "frames": [{"boxes": [], "scores": [], "labels": []}]}, "frames"),
])
def test_bad_records_name_file_line_and_field(tmp_path, record, field):
    path = tmp_path / "boxes.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(DataError) as err:
        load_box_file(path)
    assert err.value.field == field and err.value.line == 2 and str(path) in str(err.value)


def test_duplicate_ids_are_refused(tmp_path):
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps([RECORDS[0], RECORDS[0]]))
    with pytest.raises(DataError, match=r"record 1\].*id=1.*duplicate"):
        load_box_file(path)


# -- join -----------------------------------------------------------------------------------------
class ListDataset:
    provides = frozenset({IMAGES})

    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


def _samples():
    img = Image.new("RGB", (640, 480))
    turns = [Turn("user", "<image>\nWhat?"), Turn("assistant", "a dog")]
    return [Sample("1", turns, [img], source=SampleSource("train.json", 1)),
            Sample("b", turns, [img]),
            Sample("text", [Turn("user", "Hi"), Turn("assistant", "hello")]),
            Sample("nobox", turns, [img], source=SampleSource("train.json", 4))]


def _box_file(tmp_path):
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps(RECORDS))
    return path


def test_join_sets_filtered_boxes_and_declares_provides(tmp_path):
    ds = BoxJoin(ListDataset(_samples()[:3]), _box_file(tmp_path))
    assert provides(ds) == frozenset({IMAGES, BOXES}) and len(ds) == 3
    s = ds[0]
    assert len(s.boxes) == 1 and np.array_equal(s.boxes[0], np.asarray([[100, 50, 200, 150], [0, 0, 10, 10]],
                                                                       np.float32))
    assert s.meta["box_labels"] == ["dog", "ball"]
    assert ds[1].boxes[0].shape == (0, 4)
    assert ds[2].boxes == []  # text-only: no image, no record needed
    assert ds.missing_ids() == []


def test_missing_ids_error_policy_names_file_and_id(tmp_path):
    ds = BoxJoin(ListDataset(_samples()), _box_file(tmp_path))
    assert ds.missing_ids() == ["nobox"]
    with pytest.raises(DataError) as err:
        ds[3]
    assert err.value.record_id == "nobox" and "boxes.json" in str(err.value) and err.value.field == "id"


def test_missing_ids_empty_policy_counts(tmp_path):
    ds = BoxJoin(ListDataset(_samples()), _box_file(tmp_path), missing="empty")
    assert ds[3].boxes[0].shape == (0, 4)
    ds[3]
    assert ds.num_missing == 1 and ds.missing_seen == {"nobox"}
    with pytest.raises(ConfigError, match="missing"):
        BoxJoin(ListDataset([]), _box_file(tmp_path), missing="skip")


def test_multi_image_samples_are_refused(tmp_path):
    img = Image.new("RGB", (8, 8))
    ds = BoxJoin(ListDataset([Sample("1", [Turn("user", "<image><image>")], [img, img])]), _box_file(tmp_path))
    with pytest.raises(DataError, match="one image per id"):
        ds[0]


def test_box_path_to_the_768_view_matches_mg_llava():
    # components.md 2.8.6: 640x480 padded to 640x640 (y += 80), scaled by 1.2: (100,50,200,150) -> (120,156,240,276)
    _, affine = transform_image(Image.new("RGB", (640, 480)), ImageView("hires", 768, resize="pad"))
    assert torch.allclose(affine.boxes(np.asarray([[100, 50, 200, 150]])), torch.tensor([[120.0, 156, 240, 276]]))


@pytest.mark.parametrize("box, message", [([600, 400, 700, 470], r"lies outside the 640x480 image"),
                                          ([10, 10, 5, 20], r"x2 < x1"),
                                          ([-3, 0, 10, 10], r"lies outside")])
def test_boxes_outside_their_image_are_refused_naming_file_record_and_field(tmp_path, box, message):
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps([{"id": "1", "boxes": [[1, 1, 5, 5], box], "scores": [0.9, 0.8],
                                 "labels": ["dog", "cat"]}]))
    ds = BoxJoin(ListDataset(_samples()[:1]), path)
    with pytest.raises(DataError, match=message) as err:
        ds[0]
    assert err.value.record_id == "1" and err.value.field == "boxes[1]" and "boxes.json" in str(err.value)
