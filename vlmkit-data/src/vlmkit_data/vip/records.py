"""Region-level records of the ViP-LLaVA mix (components.md §4.4), read from a ``Sample``.

A region record is an ordinary LLaVA record with extra fields. Its type comes from an explicit
``region_type`` field, or, as in ViP-LLaVA, from the id: ``"refcocog-gpt4v-123".split('-')[0]``
(and the sub-type from ``split('-')[1]``). ``LlavaJsonDataset`` keeps the extra fields in
``Sample.meta``; a record may instead carry them under ``regions: [{"type": ..., ...}]`` (one object
for its image), which lands in ``Sample.regions``.

Fields per type (boxes ``[x1, y1, x2, y2]`` in original pixels; polygons COCO-style flat lists
``[x1, y1, x2, y2, ...]`` or lists of ``[x, y]`` points):

* ``refcocog``: ``bboxes``, optional ``segmentations`` (per box: a list of polygons, or null),
  ``answer`` (not for the ``gpt4v`` sub-type, whose ``conversations`` hold ``<bbox>``/``<bboxN>``);
* ``vg_rel``: ``bboxes`` (2: subject, object), ``answer`` (gpt4v: ``<bbox0>``/``<bbox1>`` in the
  conversations); segmentations are ignored, as in the original;
* ``vcr``: ``question``, ``answer_choices``, ``answer_label``, ``rationale_choices``,
  ``rationale_label``, ``class_names``; token lists mix words and lists of object indices. Object boxes
  and polygons come from ``meta_dir`` (a VCR json with ``boxes`` ``[x1, y1, x2, y2, score]`` and
  ``segms``), or inline ``bboxes``/``segmentations``;
* ``flickr30k``: ``bbox`` (per entity, a list of boxes) and ``grounding`` (a caption with ``<bboxN>``);
* ``v7w``: ``question``, ``bboxes``, ``answer`` (one of the boxes, or its index);
* ``pointQA_twice``: ``bbox`` or ``bboxes`` (one box), ``answer`` and the question text, under the key
  named by ``question_type``, by the id's sub-type, or ``question``.

A record that is not a region record (no known id prefix and no region fields) is left alone; a
record with region fields whose type is unknown, or with a missing or malformed field, is a
``DataError`` naming the file, line, id and field.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from vlmkit.data.samples import Sample, source_location
from vlmkit.errors import DataError

from .drawing import Region

#: per type: (allowed shapes, constant style) (components.md §4.2)
VIP_CONFIG: dict[str, tuple[tuple[str, ...], bool]] = {
    "refcocog": (("rectangle", "ellipse", "triangle", "point", "scribble", "mask contour", "mask", "arrow"), False),
    "vcr": (("rectangle", "ellipse", "triangle", "scribble", "mask contour", "mask", "arrow"), False),
    "vg_rel": (("rectangle", "ellipse"), False),
    "flickr30k": (("rectangle", "ellipse", "arrow"), False),
    "v7w": (("rectangle",), True),
    "pointQA_twice": (("rectangle",), True),
}
REGION_TYPES: tuple[str, ...] = tuple(VIP_CONFIG)
#: fields whose presence marks a record as region-level even when its id says nothing
REGION_FIELDS = ("region_type", "bboxes", "bbox", "segmentations", "meta_dir", "grounding")


@dataclass
class RegionRecord:
    """A parsed region record: its type, and per referred entity the regions drawn with one prompt."""

    type: str
    sub_type: str
    #: per entity (a box, a VCR object, a flickr30k phrase): the regions that share its prompt
    entities: list[list[Region]]
    fields: dict[str, Any]
    sample: Sample
    #: VCR: object index -> entity index
    object_entity: dict[int, int] = field(default_factory=dict)

    def error(self, message: str, fld: str | None = None) -> DataError:
        return sample_error(self.sample, message, fld)


def sample_error(sample: Sample, message: str, fld: str | None = None, kind: str = "bad_region") -> DataError:
    file, line = source_location(sample.source)
    return DataError(message, file=file, line=line, record_id=sample.id, field=fld, kind=kind)


def region_fields(sample: Sample) -> dict[str, Any]:
    """Where the region fields of a sample are: its ``regions[0]`` object, else its ``meta``."""
    if sample.regions and isinstance(sample.regions[0], dict) and sample.regions[0]:
        return sample.regions[0]
    return sample.meta


def region_type(sample: Sample, strict: bool = True) -> tuple[str, str] | None:
    """``(type, sub_type)`` of a region record, ``None`` for an ordinary record; unknown types raise.

    ``strict=False`` treats a record with region-like fields but no known id prefix as ordinary (an
    explicit ``region_type`` that is unknown still raises).
    """
    f = region_fields(sample)
    explicit = f.get("region_type", f.get("type") if f is not sample.meta else None)
    parts = str(sample.id).split("-")
    sub = str(f.get("sub_type", parts[1] if len(parts) > 1 else ""))
    if explicit is not None:
        if explicit not in VIP_CONFIG:
            raise sample_error(sample, f"unknown region type {explicit!r}; known: {', '.join(REGION_TYPES)}",
                               "region_type")
        return str(explicit), sub
    if parts[0] in VIP_CONFIG:
        return parts[0], sub
    if strict and any(k in f for k in REGION_FIELDS):
        present = [k for k in REGION_FIELDS if k in f]
        raise sample_error(sample, f"the record has region fields ({', '.join(present)}) but its id prefix "
                           f"{parts[0]!r} is not a region type; known: {', '.join(REGION_TYPES)} (name the type in "
                           "the id, 'type-subtype-n', or in a 'region_type' field)", "id")
    return None


# -- field parsing -------------------------------------------------------------------------------------
def _box(sample: Sample, value: Any, fld: str) -> tuple[float, float, float, float]:
    try:
        arr = [float(v) for v in value]
    except (TypeError, ValueError):
        arr = []
    if len(arr) < 4:
        raise sample_error(sample, f"expected a box [x1, y1, x2, y2], got {value!r}", fld)
    x1, y1, x2, y2 = arr[:4]  # VCR boxes carry a 5th value, the detector score
    if not (np.isfinite(arr[:4]).all() and x2 >= x1 and y2 >= y1):
        raise sample_error(sample, f"box {arr[:4]} is not [x1, y1, x2, y2] with x2 >= x1 and y2 >= y1", fld)
    return x1, y1, x2, y2


def _boxes(sample: Sample, value: Any, fld: str) -> list[tuple[float, float, float, float]]:
    if not isinstance(value, list) or not value:
        raise sample_error(sample, "expected a non-empty list of boxes [x1, y1, x2, y2]", fld)
    return [_box(sample, b, f"{fld}[{i}]") for i, b in enumerate(value)]


def polygons(sample: Sample, value: Any, fld: str) -> list[np.ndarray]:
    """COCO flat polygons ``[[x1, y1, x2, y2, ...], ...]``, one flat polygon, or ``[[[x, y], ...], ...]``."""
    if value is None or value == []:
        return []
    if isinstance(value, dict):
        raise sample_error(sample, "RLE masks are not supported; give polygons", fld)
    if isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
        value = [value]
    out = []
    for k, poly in enumerate(value if isinstance(value, list) else [None]):
        try:
            arr = np.asarray(poly, dtype=np.float64)
            arr = arr.reshape(-1, 2)
        except (TypeError, ValueError):
            raise sample_error(sample, "a polygon is a flat list [x1, y1, x2, y2, ...] or a list of [x, y]",
                               f"{fld}[{k}]") from None
        if len(arr) >= 3 and np.isfinite(arr).all():
            out.append(arr)
    return out


def _text(sample: Sample, f: dict[str, Any], key: str) -> str:
    value = f.get(key)
    if not isinstance(value, str):
        raise sample_error(sample, f"expected a string '{key}'", key)
    return value


def _require(sample: Sample, f: dict[str, Any], *keys: str) -> None:
    for key in keys:
        if key not in f:
            raise sample_error(sample, f"missing '{key}'", key)


# -- per type ------------------------------------------------------------------------------------------
def parse_region_record(sample: Sample, meta_root: str | None = None, strict: bool = True) -> RegionRecord | None:
    """The region record of ``sample``, or ``None`` for an ordinary LLaVA sample (see ``region_type``)."""
    kind = region_type(sample, strict)
    if kind is None:
        return None
    rtype, sub = kind
    f = region_fields(sample)
    if len(sample.images) != 1:
        raise sample_error(sample, f"a region record needs exactly one image, got {len(sample.images)}", "image")
    parse = _PARSERS[rtype]
    return parse(sample, rtype, sub, f, meta_root)


def _boxes_with_polygons(sample: Sample, f: dict[str, Any], use_segmentations: bool = True) -> list[list[Region]]:
    boxes = _boxes(sample, f.get("bboxes"), "bboxes")
    segs = f.get("segmentations") if use_segmentations else None
    if segs is not None and (not isinstance(segs, list) or len(segs) != len(boxes)):
        raise sample_error(sample, f"'segmentations' must hold one entry (polygons or null) per box ({len(boxes)})",
                           "segmentations")
    return [[Region(b, polygons(sample, segs[i] if segs is not None else None, f"segmentations[{i}]"))]
            for i, b in enumerate(boxes)]


def _parse_refcocog(sample, rtype, sub, f, meta_root) -> RegionRecord:
    entities = _boxes_with_polygons(sample, f)
    if sub != "gpt4v":
        _text(sample, f, "answer")
    return RegionRecord(rtype, sub, entities, f, sample)


def _parse_vg_rel(sample, rtype, sub, f, meta_root) -> RegionRecord:
    entities = _boxes_with_polygons(sample, f, use_segmentations=False)
    if sub != "gpt4v":
        if len(entities) != 2:
            raise sample_error(sample, f"vg_rel needs 2 boxes (subject, object), got {len(entities)}", "bboxes")
        _text(sample, f, "answer")
    return RegionRecord(rtype, sub, entities, f, sample)


def _parse_flickr30k(sample, rtype, sub, f, meta_root) -> RegionRecord:
    raw = f.get("bbox")
    if not isinstance(raw, list) or not raw:
        raise sample_error(sample, "expected 'bbox': per entity, a list of boxes", "bbox")
    entities = []
    for i, ent in enumerate(raw):
        if isinstance(ent, list) and ent and not isinstance(ent[0], list):
            ent = [ent]  # an entity given as a single box
        entities.append([Region(b) for b in _boxes(sample, ent, f"bbox[{i}]")])
    _text(sample, f, "grounding")
    return RegionRecord(rtype, sub, entities, f, sample)


def _parse_v7w(sample, rtype, sub, f, meta_root) -> RegionRecord:
    boxes = _boxes(sample, f.get("bboxes"), "bboxes")
    _text(sample, f, "question")
    _require(sample, f, "answer")
    answer_index(sample, f["answer"], boxes)
    return RegionRecord(rtype, sub, [[Region(b)] for b in boxes], f, sample)


def answer_index(sample: Sample, answer: Any, boxes: Sequence[Sequence[float]]) -> int:
    """The index of v7w's answer: one of the boxes (compared to 1e-3 px), or an index."""
    if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(boxes):
        return answer
    try:
        target = np.asarray(answer, dtype=np.float64).reshape(-1)[:4]
        for i, b in enumerate(boxes):
            if len(target) == 4 and np.allclose(target, b[:4], atol=1e-3):
                return i
    except (TypeError, ValueError):
        pass
    raise sample_error(sample, f"the answer {answer!r} is none of the {len(boxes)} boxes", "answer")


def _parse_point_qa(sample, rtype, sub, f, meta_root) -> RegionRecord:
    if "bboxes" in f:
        boxes = _boxes(sample, f["bboxes"], "bboxes")
    elif "bbox" in f:
        b = f["bbox"]
        boxes = _boxes(sample, b if isinstance(b, list) and b and isinstance(b[0], list) else [b], "bbox")
    else:
        raise sample_error(sample, "missing 'bbox' (the exemplary object's box)", "bbox")
    if len(boxes) != 1:
        raise sample_error(sample, f"pointQA_twice has one exemplary box, got {len(boxes)}", "bbox")
    point_qa_question(sample, f, sub)
    _require(sample, f, "answer")
    return RegionRecord(rtype, sub, [[Region(boxes[0])]], f, sample)


def point_qa_question(sample: Sample, f: dict[str, Any], sub: str) -> str:
    key = f.get("question_type")
    for k in (key, sub, "question"):
        if isinstance(k, str) and isinstance(f.get(k), str):
            return f[k]
    raise sample_error(sample, "no question text: expected the key named by 'question_type', by the id's sub-type, "
                       "or 'question'", "question")


VCR_FIELDS = ("question", "answer_choices", "answer_label", "rationale_choices", "rationale_label", "class_names")


def vcr_references(tokens: Any) -> list[int]:
    """Object indices referred to by a VCR token list (lists of ints among the words)."""
    out = []
    for tok in tokens if isinstance(tokens, list) else []:
        if isinstance(tok, list):
            out += [int(i) for i in tok]
    return out


def _parse_vcr(sample, rtype, sub, f, meta_root) -> RegionRecord:
    _require(sample, f, *VCR_FIELDS)
    for key in ("answer_choices", "rationale_choices"):
        if not isinstance(f[key], list) or not f[key]:
            raise sample_error(sample, f"expected a list of token lists '{key}'", key)
    for key, choices in (("answer_label", "answer_choices"), ("rationale_label", "rationale_choices")):
        if not isinstance(f[key], int) or not 0 <= f[key] < len(f[choices]):
            raise sample_error(sample, f"expected an index into '{choices}'", key)
    if "bboxes" in f:
        boxes = [_box(sample, b, f"bboxes[{i}]") for i, b in enumerate(f["bboxes"])]
        segs = f.get("segmentations") or [None] * len(boxes)
    else:
        boxes, segs = _vcr_meta(sample, f, meta_root)
    names = f["class_names"]
    referred = sorted(set(vcr_references(f["question"]) + [i for c in f["answer_choices"] for i in vcr_references(c)]
                          + [i for c in f["rationale_choices"] for i in vcr_references(c)]))
    bad = [i for i in referred if not 0 <= i < min(len(boxes), len(names))]
    if bad:
        raise sample_error(sample, f"object indices {bad} are out of range ({len(boxes)} boxes, {len(names)} class "
                           "names)", "question")
    entities = [[Region(boxes[i], polygons(sample, segs[i] if i < len(segs) else None, f"segms[{i}]"))]
                for i in referred]
    return RegionRecord(rtype, sub, entities, f, sample, {i: k for k, i in enumerate(referred)})


def _vcr_meta(sample: Sample, f: dict[str, Any], meta_root: str | None) -> tuple[list, list]:
    ref = f.get("meta_dir")
    if not isinstance(ref, str):
        raise sample_error(sample, "a vcr record needs 'meta_dir' (its VCR json) or inline 'bboxes'", "meta_dir")
    path = ref if os.path.isabs(ref) or meta_root is None else os.path.join(meta_root, ref)
    try:
        with open(path, encoding="utf-8") as fh:
            meta = json.load(fh)
    except FileNotFoundError:
        raise sample_error(sample, f"VCR metadata file not found: {path} (set the vip transform's meta_root)",
                           "meta_dir", kind="missing_file") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise sample_error(sample, f"cannot read VCR metadata {path}: {exc}", "meta_dir") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("boxes"), list):
        raise sample_error(sample, f"VCR metadata {path} has no 'boxes' list", "meta_dir")
    boxes = [_box(sample, b, f"meta_dir:boxes[{i}]") for i, b in enumerate(meta["boxes"])]
    segs = meta.get("segms") or [None] * len(boxes)
    return boxes, segs


_PARSERS = {"refcocog": _parse_refcocog, "vg_rel": _parse_vg_rel, "flickr30k": _parse_flickr30k, "v7w": _parse_v7w,
            "pointQA_twice": _parse_point_qa, "vcr": _parse_vcr}
