"""MG-LLaVA box files: offline detections joined to training records by id, then filtered.

A box file is a JSON list, or JSON lines, of records ``{"id", "boxes", "scores", "labels"}``:
xyxy boxes in ORIGINAL image pixels (from RAM++ tags + OWLv2), one score and one tag per box.
``BoxJoin`` wraps any dataset of ``vlmkit.data.samples.Sample`` and sets ``Sample.boxes`` (one array per
image; single-image records) after ``filter_boxes``. The data pipeline then remaps them through
pad + resize into each view's pixels (``vlmkit.data.image_processing.Affine``).

Filtering follows MG-LLaVA: per-label NMS (IoU 0.2), then, when more than ``limit`` boxes remain,
the top ``per_label_when_over_limit`` per label. There is no global cap unless ``max_total`` is set.
The original derives the per-label count from the limit (20 above 50, 5 below) and leaves
``limit == 50`` undefined; here it is an explicit argument, and ``None`` derives it with 50 -> 20.

Boxes that are not finite are refused when the file is read; boxes outside their image (or with x2 < x1)
when joined to the record, whose image gives the size; both name the box file, the record id and the field.
Records whose id has no box record are never skipped silently: ``missing='error'`` raises a
``DataError`` naming the box file and the id; ``missing='empty'`` gives the image no boxes and
counts it (``num_missing``); ``missing_ids()`` lists every such id of the wrapped dataset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from vlmkit.data.samples import BOXES, Sample, provides, source_location
from vlmkit.errors import ConfigError, DataError

from .box_checks import box_problem
from .record_caps import DEFAULT_LIMITS, OVER_LIMIT, over

MISSING_POLICIES = ("error", "empty")


@dataclass
class BoxRecord:
    """Detections for one image: boxes (n, 4) xyxy float32 in original pixels, scores (n,), labels."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: list[str] = field(default_factory=list)
    #: the number of boxes of a record over the limit (its boxes are not kept: using it is an error)
    over_limit: int = 0

    def __len__(self) -> int:
        return len(self.boxes)


def _records(path: Path) -> Iterator[tuple[int | None, int, Any]]:
    """(line or None, index, record) for a JSON list or JSON-lines file."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"not valid JSON: {exc.msg}", file=str(path), line=exc.lineno) from None
        for i, rec in enumerate(data):
            yield None, i, rec
        return
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield n, n - 1, json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"not valid JSON: {exc.msg}", file=str(path), line=n) from None


def _parse(rec: Any, where: dict[str, Any], max_boxes: int = DEFAULT_LIMITS.max_boxes) -> tuple[str, BoxRecord]:
    if not isinstance(rec, dict):
        raise DataError(f"expected an object, got {type(rec).__name__}", **where)
    if "id" not in rec:
        raise DataError("record has no id", field="id", **where)
    rid = str(rec["id"])
    where = {**where, "record_id": rid}
    if "frames" in rec:
        raise DataError("video box records (frames) are not supported; one record per image", field="frames", **where)
    for key in ("boxes", "scores", "labels"):
        if not isinstance(rec.get(key), list):
            raise DataError(f"expected a list, got {type(rec.get(key)).__name__}", field=key, **where)
    n = len(rec["boxes"])
    if n > max_boxes:  # not parsed (NMS over it would take minutes); the sample that uses it is refused by name
        return rid, BoxRecord(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), [], over_limit=n)
    try:
        boxes = np.asarray(rec["boxes"], dtype=np.float32).reshape(n, 4) if n else np.zeros((0, 4), np.float32)
    except (ValueError, TypeError):
        raise DataError("expected a list of [x1, y1, x2, y2] numbers", field="boxes", **where) from None
    if not np.isfinite(boxes).all():
        raise DataError("box coordinates must be finite numbers", field="boxes", **where)
    for key in ("scores", "labels"):
        if len(rec[key]) != n:
            raise DataError(f"{len(rec[key])} {key} for {n} boxes", field=key, **where)
    try:
        scores = np.asarray(rec["scores"], dtype=np.float32).reshape(n)
    except (ValueError, TypeError):
        raise DataError("expected a list of numbers", field="scores", **where) from None
    return rid, BoxRecord(boxes, scores, [str(label) for label in rec["labels"]])


def load_box_file(path: str | Path, max_boxes: int = DEFAULT_LIMITS.max_boxes) -> dict[str, BoxRecord]:
    """Read a box file (JSON list or JSONL) into ``{str(id): BoxRecord}``; duplicate ids are an error."""
    p = Path(path)
    if not p.is_file():
        raise DataError("no such box file", file=str(p))
    out: dict[str, BoxRecord] = {}
    for line, index, rec in _records(p):
        where: dict[str, Any] = {"file": str(p), "line": line}
        if line is None:
            where["file"] = f"{p}[record {index}]"
        rid, record = _parse(rec, where, max_boxes)
        if rid in out:
            raise DataError("duplicate id in box file", field="id", record_id=rid, **where)
        out[rid] = record
    return out


def _top_per_label(order: np.ndarray, labels: Sequence[str], k: int) -> np.ndarray:
    """Of ``order`` (indices, best first), keep at most ``k`` per label, preserving the order."""
    seen: dict[str, int] = {}
    keep = []
    for i in order.tolist():
        c = seen.get(labels[i], 0)
        if c < k:
            keep.append(i)
        seen[labels[i]] = c + 1
    return np.asarray(keep, dtype=np.int64)


def filter_boxes(boxes: Any, scores: Any, labels: Sequence[str], iou: float = 0.2, limit: int = 100,
                 per_label_when_over_limit: int | None = 20, per_label: int | None = None,
                 max_total: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """MG-LLaVA's box filter. Returns (boxes, scores, labels), best score first.

    1. per-label NMS at ``iou`` (torchvision ``batched_nms``);
    2. if more than ``limit`` remain, keep the top ``per_label_when_over_limit`` of each label
       (``None``: 20 when ``limit >= 50``, else 5, i.e. the original rule with its undefined 50 fixed);
    3. ``per_label``: an unconditional per-label cap (MG-LLaVA uses 1 for texts near max length);
    4. ``max_total``: an optional global cap (the original has none).
    """
    import torch
    from torchvision.ops import batched_nms

    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    s = np.asarray(scores, dtype=np.float32).reshape(-1)
    labels = [str(x) for x in labels]
    if not (len(b) == len(s) == len(labels)):
        raise ValueError(f"filter_boxes: {len(b)} boxes, {len(s)} scores, {len(labels)} labels")
    if len(b) == 0:
        return b, s, labels
    ids = {name: i for i, name in enumerate(dict.fromkeys(labels))}
    label_ids = torch.tensor([ids[x] for x in labels])
    order = batched_nms(torch.from_numpy(b), torch.from_numpy(s), label_ids, iou).numpy()  # best first
    if len(order) > limit:
        k = per_label_when_over_limit if per_label_when_over_limit is not None else (20 if limit >= 50 else 5)
        order = _top_per_label(order, labels, k)
    if per_label is not None:
        order = _top_per_label(order, labels, per_label)
    if max_total is not None:
        order = order[:max_total]
    return b[order], s[order], [labels[i] for i in order]


class BoxJoin:
    """A dataset of Samples with ``Sample.boxes`` filled from an MG-LLaVA box file (joined by id).

    Text-only samples get ``boxes=[]`` and need no record. A sample with several images is refused
    (box files describe one image per id). ``missing``: ``'error'`` (default) or ``'empty'``.
    """

    def __init__(self, dataset: Any, box_file: str | Path, missing: str = "error", iou: float = 0.2,
                 limit: int = 100, per_label_when_over_limit: int | None = 20, max_total: int | None = None,
                 max_boxes: int = DEFAULT_LIMITS.max_boxes):
        if missing not in MISSING_POLICIES:
            raise ConfigError(f"box join: missing must be one of {', '.join(MISSING_POLICIES)}, got '{missing}'")
        self.dataset = dataset
        self.box_file = str(box_file)
        self.max_boxes = max_boxes
        self.records = load_box_file(box_file, max_boxes)
        self.missing = missing
        self.filter_args = dict(iou=iou, limit=limit, per_label_when_over_limit=per_label_when_over_limit,
                                max_total=max_total)
        self.provides = provides(dataset) | {BOXES}
        #: ids that fell back to no boxes under missing='empty' (in this process)
        self.missing_seen: set[str] = set()

    @property
    def num_missing(self) -> int:
        return len(self.missing_seen)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Sample:
        sample: Sample = self.dataset[index]
        if not sample.images:
            return sample.replace(boxes=[])
        if len(sample.images) > 1:
            file, line = source_location(sample.source)
            raise DataError(f"{len(sample.images)} images, but box files hold one image per id", file=file, line=line,
                            record_id=sample.id, field="images")
        record = self.records.get(str(sample.id))
        if record is None:
            if self.missing == "error":
                raise DataError(f"no box record for this id in box file {self.box_file} "
                                "(use missing='empty' to train such images without object tokens)",
                                file=self.box_file, record_id=str(sample.id), field="id", kind="missing")
            self.missing_seen.add(str(sample.id))
            return sample.replace(boxes=[np.zeros((0, 4), np.float32)])
        if record.over_limit:
            raise DataError(over("boxes", record.over_limit, self.max_boxes, "max_boxes") + f" in box file "
                            f"{self.box_file}", file=self.box_file, record_id=str(sample.id), field="boxes",
                            kind=OVER_LIMIT)
        size = sample.images[0].size
        for k, box in enumerate(record.boxes):  # against the image they were detected on, before any filter
            found = box_problem(box, size)
            if found is not None:
                raise DataError(f"{found[0]} (box {k} of the record in box file {self.box_file})",
                                file=self.box_file, record_id=str(sample.id), field=f"boxes[{k}]", kind=found[1])
        boxes, scores, labels = filter_boxes(record.boxes, record.scores, record.labels, **self.filter_args)
        meta = {**sample.meta, "box_scores": scores, "box_labels": labels}
        return sample.replace(boxes=[boxes], meta=meta)

    def missing_ids(self) -> list[str]:
        """Ids of image samples of the wrapped dataset with no box record (reads every sample once)."""
        out = []
        for i in range(len(self.dataset)):
            s = self.dataset[i]
            if s.images and str(s.id) not in self.records:
                out.append(str(s.id))
        return out
