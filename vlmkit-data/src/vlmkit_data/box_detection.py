"""Make MG-LLaVA box files from a LLaVA dataset with an open-vocabulary detector (OWLv2 or OWL-ViT).

MG-LLaVA gets its boxes offline: tags per image (RAM++), then OWLv2 queried with ``"a photo of {tag}"``
at score threshold 0.2, boxes in ORIGINAL image pixels (components.md section 2.6). ``detect_boxes``
does the detector part with transformers' zero-shot detectors (a folder or a hub id), queried with a
tag vocabulary or with each record's own tags, and keeps what MG-LLaVA keeps, in MG-LLaVA's order:

1. the score threshold, on boxes in the pixels of the image padded to a square (OWLv2 pads);
2. ``int()`` of each coordinate (truncation), unclamped, as its ``image_offline_to_bbox.py`` writes them;
3. per-label NMS at IoU 0.2, then the per-label cap (``box_files.filter_boxes``, what its dataset's
   ``bbox_nms`` and cap do; the same function vlmkit's dataset applies);
4. then, and only then, the clamp to the image. Clamping first would change the IoUs and so what NMS keeps.
   A box wholly in the padding has no area after the clamp: it is dropped and counted (``zero_area``).

``scripts/seed_fixtures/mg_llava_boxes.py`` checks this against MG-LLaVA's own ``bbox_nms`` on a tiny detector.

The output is the box file the ``mg-llava`` preset reads (``vlmkit_data.box_files``), as JSON lines
``{"id", "boxes", "scores", "labels"}``, one per record with an image, written as it goes:

* **resume**: records already in the output are not detected again; a line cut short by a kill is
  dropped and its record redone;
* **failures are never silent**: a record whose image is missing or does not decode is left out of the
  box file and written, with the reason, to ``<out>.errors.jsonl``; the report counts and names them;
* **batches** of images go through the detector together, on the GPU when there is one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from vlmkit.errors import ConfigError, DataError

#: MG-LLaVA's detection settings (image_offline_to_bbox.py)
QUERY_TEMPLATE = "a photo of {}"
SCORE_THRESHOLD = 0.2


@dataclass
class BoxReport:
    """What one run did: records written now, records found done, failures (id, image, reason)."""

    out: str
    written: int = 0
    resumed: int = 0
    without_image: int = 0
    boxes: int = 0
    #: boxes NMS kept that lie wholly outside the image (in OWLv2's padding): dropped after the clamp
    zero_area: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)
    #: read from the files after the run, so a resumed run reports what earlier runs did too
    total_records: int = 0
    total_failed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"out": self.out, "written": self.written, "resumed": self.resumed,
                "without_image": self.without_image, "boxes": self.boxes, "zero_area_dropped": self.zero_area,
                "failed": len(self.failed), "failed_records": self.failed[:20],
                "total_records": self.total_records, "total_failed": self.total_failed}


def errors_path(out: Path) -> Path:
    return out.with_name(out.name + ".errors.jsonl")


def _done_ids(path: Path) -> set[str]:
    """Ids of the complete lines of a JSON-lines file; a last line cut short (a kill) is removed."""
    if not path.is_file():
        return set()
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep < len(data):  # an unfinished last line: drop it, its record is redone
        with open(path, "r+b") as f:
            f.truncate(keep)
    done = set()
    for n, line in enumerate(data[:keep].splitlines(), 1):
        if not line.strip():
            continue
        try:
            done.add(str(json.loads(line)["id"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"cannot resume: line {n} is not a box record ({exc})", file=str(path),
                            kind="corrupt_box_file") from exc
    return done


class Detector:
    """A transformers zero-shot detector and its processor, queried with text per image."""

    def __init__(self, model: str, device: str | None = None):
        import torch
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        try:
            self.processor = AutoProcessor.from_pretrained(model)
            self.model = AutoModelForZeroShotObjectDetection.from_pretrained(model).eval()
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--detector {model}: cannot load an open-vocabulary detector "
                              f"({str(exc).splitlines()[0][:200]}); give a local OWLv2 / OWL-ViT folder or a hub id "
                              "in the Hugging Face cache") from exc
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)
        # OWLv2 pads to a square before resizing, so its boxes come in the padded square's pixels
        self.pads_to_square = getattr(self.model.config, "model_type", "") == "owlv2"
        self.max_text = int(getattr(self.model.config.text_config, "max_position_embeddings", 16))

    def __call__(self, images: Sequence[Any], labels: Sequence[Sequence[str]],
                 threshold: float) -> list[tuple[list[list[float]], list[float], list[str]]]:
        import torch

        queries = [[QUERY_TEMPLATE.format(t) for t in tags] or [QUERY_TEMPLATE.format("object")] for tags in labels]
        inputs = self.processor(text=queries, images=list(images), return_tensors="pt", padding="max_length",
                                max_length=self.max_text, truncation=True)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with torch.no_grad():
            outputs = self.model(**inputs)
        # the processor pads every image's queries to the batch's longest list; a padded query must never win a
        # box's argmax (MG-LLaVA asks one image at a time, with its own tags only)
        for b, tags in enumerate(queries):
            outputs.logits[b, :, len(tags):] = float("-inf")
        sizes = [(max(im.size),) * 2 if self.pads_to_square else (im.size[1], im.size[0]) for im in images]
        results = self.processor.post_process_grounded_object_detection(outputs, threshold=threshold,
                                                                         target_sizes=sizes)
        out = []
        for tags, res in zip(labels, results):
            boxes = res["boxes"].float().cpu()  # unclamped: MG-LLaVA runs NMS before any clamp
            names = list(tags) or ["object"]
            # the processor pads every image's queries to the batch's longest list: drop hits on padding
            keep = [k for k, i in enumerate(res["labels"].tolist()) if i < len(names)]
            out.append(([boxes[k].tolist() for k in keep], [float(res["scores"][k]) for k in keep],
                        [names[int(res["labels"][k])] for k in keep]))
        return out


@dataclass
class KeptBoxes:
    boxes: list[list[int]]
    scores: list[float]
    labels: list[str]
    zero_area: int


def mg_llava_order(boxes: Sequence[Sequence[float]], scores: Sequence[float], labels: Sequence[str],
                   size: tuple[int, int], iou: float = 0.2, limit: int = 100) -> KeptBoxes:
    """A thresholded detector's boxes (pixels of the padded square) -> what MG-LLaVA keeps, in its order:
    ``int()`` truncation, per-label NMS, the cap, then the clamp to the ``size`` (w, h) image; boxes left with
    no area are dropped and counted."""
    from .box_files import filter_boxes

    truncated = [[int(float(v)) for v in b] for b in boxes]  # torch's .int(): toward zero, as MG-LLaVA writes
    kept_boxes, kept_scores, kept_labels = filter_boxes(truncated, scores, labels, iou=iou, limit=limit)
    w, h = size
    out = KeptBoxes([], [], [], 0)
    for b, score, label in zip(kept_boxes, kept_scores, kept_labels):
        x0, y0, x1, y1 = (int(min(max(v, 0), lim)) for v, lim in zip(b, (w, h, w, h)))
        if x1 <= x0 or y1 <= y0:
            out.zero_area += 1
            continue
        out.boxes.append([x0, y0, x1, y1])
        out.scores.append(round(float(score), 4))
        out.labels.append(label)
    return out


def _labels_for(rec: dict[str, Any], vocabulary: Sequence[str] | None, tags_field: str | None) -> list[str]:
    if tags_field is not None:
        tags = rec.get(tags_field)
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ValueError(f"field '{tags_field}' is not a list of tag strings")
        return list(dict.fromkeys(tags))
    return list(vocabulary or [])


def detect_boxes(data: str | Path, out: str | Path, detector: str | Detector, *, image_root: str | None = None,
                 tags: Sequence[str] | None = None, tags_field: str | None = None, threshold: float = SCORE_THRESHOLD,
                 iou: float = 0.2, limit: int = 100, batch_size: int = 8, device: str | None = None,
                 progress: bool | None = None, on_batch: Callable[[int], None] | None = None) -> BoxReport:
    """Detect boxes for every record with an image of the LLaVA JSON/JSONL ``data``; append them to ``out``.

    Query with ``tags`` (a vocabulary for every image) or ``tags_field`` (each record's own list of tags,
    e.g. from a tagging model). ``on_batch(done)`` is called after each batch is written (tests, progress).
    """
    from vlmkit.progress import ProgressReporter

    from .llava_json import LlavaJsonDataset

    if (tags is None) == (tags_field is None):
        raise ConfigError("vlmkit data boxes: give either a tag vocabulary (--tags) or a record field with each "
                          "image's tags (--tags-field), not both or neither")
    if tags is not None and not list(tags):
        raise ConfigError("vlmkit data boxes: the tag vocabulary is empty")
    out = Path(out)
    dataset = LlavaJsonDataset(str(data), image_root=image_root, boxes=False, regions=False)
    report = BoxReport(str(out))
    done = _done_ids(out) | _done_ids(errors_path(out))
    det = detector if isinstance(detector, Detector) else Detector(detector, device)
    pending: list[tuple[str, Any, list[str]]] = []

    def flush() -> None:
        if not pending:
            return
        found = det([im for _, im, _ in pending], [t for _, _, t in pending], threshold)
        with open(out, "a", encoding="utf-8") as f:
            for (rid, image, _), (boxes, scores, labels) in zip(pending, found):
                kept = mg_llava_order(boxes, scores, labels, image.size, iou=iou, limit=limit)
                report.zero_area += kept.zero_area
                rec = {"id": rid, "boxes": kept.boxes, "scores": kept.scores, "labels": kept.labels}
                f.write(json.dumps(rec) + "\n")
                report.written += 1
                report.boxes += len(kept.labels)
            f.flush()
            os.fsync(f.fileno())
        pending.clear()

    def fail(rid: str, image: Any, reason: str) -> None:
        report.failed.append({"id": rid, "image": image, "reason": reason})
        with open(errors_path(out), "a", encoding="utf-8") as f:
            f.write(json.dumps({"id": rid, "image": image, "reason": reason}) + "\n")

    with ProgressReporter(f"detecting boxes ({out.name})", len(dataset), show=progress, unit="records") as bar:
        for i in range(len(dataset)):
            try:
                rec = dataset.record(i)
            except DataError as exc:  # a malformed line: named and counted, the rest goes on
                if f"line {dataset.line(i)}" not in done:
                    fail(f"line {dataset.line(i)}", None, str(exc))
                continue
            rid = str(rec.get("id", i))
            images = rec.get("image")
            if not images:
                report.without_image += 1
            elif rid in done:
                report.resumed += 1
            elif not isinstance(images, str):
                fail(rid, images, "MG-LLaVA box files hold one image per record; this record has several")
            else:
                try:
                    labels = _labels_for(rec, tags, tags_field)
                    image = dataset.load_image(i, rec, images, "image")
                except (DataError, ValueError) as exc:
                    fail(rid, images, str(exc))
                else:
                    pending.append((rid, image, labels))
                    if len(pending) >= batch_size:
                        flush()
                        if on_batch is not None:
                            on_batch(report.written)
            bar.update(i + 1)
        flush()
        if on_batch is not None:
            on_batch(report.written)
    report.total_records = _line_count(out)
    report.total_failed = _line_count(errors_path(out))
    return report


def _line_count(path: Path) -> int:
    if not path.is_file():
        return 0
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())
