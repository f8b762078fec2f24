"""DenseFusion-1M captions (components.md §5.1) as captioning samples, and their conversion to LLaVA JSONL.

The release is JSON lines ``{"image_id", "url", "caption", ...}``; images are downloaded separately
(``download.py`` saves ``{root}/{image_id}.png`` and writes ``"image"`` back). Each record becomes a
captioning sample for the ``plain`` template: the user turn is just ``<image>``, the answer the caption.

The file is read lazily through the byte-offset index of ``json_index`` (20 bytes a record, no record
held in memory), so the 1M-record file opens in bounded memory. The image of a record is the record's
``image`` field when present, else the first of ``{image_id}{.png,.jpg,.jpeg,.webp}`` found under the
image root. A record whose image is missing is never dropped silently: reading it raises a
``DataError`` (``missing='error'``, the default), or the dataset is restricted to the records with an
image (``missing='skip'``, which checks every record once when opened and keeps the list of skipped
ones in ``missing_records``). ``convert_densefusion`` writes LLaVA JSONL and a report of the missing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from vlmkit.data.image_files import UndecodableImage, decode_image
from vlmkit.data.samples import IMAGES, Sample, SampleSource
from vlmkit.data.templates import IMAGE_TOKEN, Turn
from vlmkit.errors import ConfigError, DataError
from vlmkit.progress import ProgressCallback, ProgressReporter

from .json_index import CHUNK_SIZE, RecordIndex, load_or_build_index
from .paths import OUTSIDE_ROOT, outside_message, resolve_under

#: tried in this order when a record names no image file
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
MISSING_POLICIES = ("error", "skip")


@dataclass(frozen=True)
class CaptionRecord:
    line: int
    image_id: str
    caption: str
    url: str | None
    image: str | None  # the record's own "image" field, if any


def parse_caption_record(raw: bytes, path: str, line: int) -> CaptionRecord:
    """One JSONL line -> ``CaptionRecord``; a malformed line or missing field is a ``DataError``."""
    try:
        rec = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"malformed JSON: {exc}", file=path, line=line, kind="malformed_json") from None
    if not isinstance(rec, dict):
        raise DataError("a record must be a JSON object", file=path, line=line, kind="malformed_json")
    image_id = rec.get("image_id")
    if not isinstance(image_id, (str, int)) or isinstance(image_id, bool) or str(image_id) == "":
        raise DataError("missing 'image_id'", file=path, line=line, field="image_id", kind="missing_field")
    caption = rec.get("caption")
    if not isinstance(caption, str) or not caption.strip():
        raise DataError("missing or empty 'caption'", file=path, line=line, record_id=str(image_id), field="caption",
                        kind="missing_field")
    image = rec.get("image")
    return CaptionRecord(line, str(image_id), caption, rec.get("url") if isinstance(rec.get("url"), str) else None,
                         image if isinstance(image, str) else None)


class ImageFinder:
    """Finds ``{image_id}{ext}`` under a root, trying the extension that worked last first."""

    def __init__(self, root: str, extensions: tuple[str, ...] = IMAGE_EXTENSIONS):
        self.root = root
        self.extensions = list(extensions)

    def outside(self, rec: CaptionRecord) -> bool:
        """Whether the record's image (its ``image`` field, or ``{image_id}.*``) leads outside the root."""
        return not resolve_under(self.root, rec.image if rec.image is not None else rec.image_id + ".png")[1]

    def find(self, rec: CaptionRecord) -> str | None:
        """The image's path; None when there is none (the caller checks ``outside`` first)."""
        if rec.image is not None:
            path = resolve_under(self.root, rec.image)[0]
            return path if os.path.isfile(path) else None
        for k, ext in enumerate(self.extensions):
            path = os.path.join(self.root, rec.image_id + ext)
            if os.path.isfile(path):
                if k:
                    self.extensions.insert(0, self.extensions.pop(k))
                return path
        return None


def iter_caption_records(path: str, progress: bool | None = None,
                         callback: ProgressCallback | None = None) -> Iterator[CaptionRecord]:
    """Stream the records of a DenseFusion JSONL file (one buffered line at a time)."""
    with ProgressReporter(f"reading {os.path.basename(path)}", os.path.getsize(path), progress, callback) as rep, \
            open(path, "rb", buffering=CHUNK_SIZE) as f:
        done = 0
        for line_no, raw in enumerate(f, 1):
            done += len(raw)
            if line_no % 65536 == 0:
                rep.update(done)
            if raw.strip():
                yield parse_caption_record(raw, path, line_no)
        rep.update(done)


class DenseFusionDataset:
    """DenseFusion-1M (or -4V-100K) JSONL as captioning samples: ``<image>`` -> the dense caption.

    ``path``: the JSONL file. ``image_root``: the folder holding ``{image_id}.png`` (default: the
    file's folder). ``missing``: ``error`` (reading a record without its image raises) or ``skip``
    (records without an image are left out when the dataset opens; see ``missing_records``).
    """

    provides = frozenset({IMAGES})

    def __init__(self, path: str, image_root: str | None = None, missing: str = "error",
                 index_cache: bool | None = None, progress: bool | None = None):
        if not os.path.isfile(path):
            raise DataError("data file not found", file=path, kind="missing_file")
        if missing not in MISSING_POLICIES:
            raise ConfigError(f"densefusion: missing must be one of {', '.join(MISSING_POLICIES)}, got '{missing}'")
        self.path = os.fspath(path)
        self.image_root = image_root if image_root is not None else os.path.dirname(os.path.abspath(path))
        self.progress = progress
        self.index: RecordIndex = load_or_build_index(self.path, cache=index_cache, progress=progress)
        if self.index.format != "jsonl":
            raise DataError("DenseFusion data is JSON lines (one record a line)", file=self.path, kind="malformed_json")
        self.finder = ImageFinder(self.image_root)
        #: record positions this dataset serves (all, or those with an image under missing='skip')
        self.positions: np.ndarray = np.arange(len(self.index), dtype=np.int64)
        self.missing_records: list[tuple[int, str]] = []  # (line, image_id) skipped under missing='skip'
        if missing == "skip":
            keep = []
            for k, rec in enumerate(iter_caption_records(self.path, progress)):
                if self.finder.find(rec) is None:
                    self.missing_records.append((rec.line, rec.image_id))
                else:
                    keep.append(k)
            self.positions = np.asarray(keep, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.positions)

    def caption_record(self, i: int) -> CaptionRecord:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"record {i} out of range for {n} records in {self.path}")
        k = int(self.positions[i % n])
        start, end = int(self.index.starts[k]), int(self.index.ends[k])
        with open(self.path, "rb") as f:
            f.seek(start)
            raw = f.read(end - start)
        return parse_caption_record(raw, self.path, int(self.index.lines[k]))

    def __getitem__(self, i: int) -> Sample:
        rec = self.caption_record(i)
        if self.finder.outside(rec):
            raise DataError(outside_message(rec.image or rec.image_id, self.image_root), file=self.path, line=rec.line,
                            record_id=rec.image_id, field="image" if rec.image is not None else "image_id",
                            kind=OUTSIDE_ROOT)
        image_path = self.finder.find(rec)
        if image_path is None:
            raise DataError(f"image not found under {self.image_root} ({rec.image or rec.image_id + '.png/.jpg/...'})",
                            file=self.path, line=rec.line, record_id=rec.image_id, field="image_id",
                            kind="missing_image")
        try:
            image = decode_image(image_path)
        except (FileNotFoundError, UndecodableImage) as exc:
            raise DataError(str(exc), file=self.path, line=rec.line, record_id=rec.image_id, field="image_id",
                            kind="corrupt_image" if isinstance(exc, UndecodableImage) else "missing_image") from None
        return Sample(id=rec.image_id, turns=caption_turns(rec.caption), images=[image],
                      source=SampleSource(self.path, rec.line), meta={"url": rec.url, "image_path": image_path})

    def modality_lengths(self) -> list[int]:
        """LLaVA's grouping length: the caption's words (every record has an image), in one sequential pass."""
        words = np.fromiter((len(r.caption.split()) for r in iter_caption_records(self.path, self.progress)),
                            dtype=np.int64, count=len(self.index))
        return words[self.positions].tolist()


def caption_turns(caption: str) -> list[Turn]:
    return [Turn("user", IMAGE_TOKEN), Turn("assistant", caption)]


def llava_record(rec: CaptionRecord, image: str) -> dict[str, Any]:
    """The LLaVA record of a caption (§5.1): the human turn is just ``<image>``."""
    return {"id": rec.image_id, "image": image,
            "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": rec.caption}]}


@dataclass
class ConvertReport:
    written: int = 0
    missing: int = 0
    #: records whose image leads outside --images (refused, listed in the report)
    refused: int = 0
    output: str = ""
    report: str | None = None
    #: the first few missing records, (line, image_id)
    first_missing: list[tuple[int, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"written": self.written, "missing": self.missing, "refused": self.refused, "output": self.output,
                "report": self.report,
                "first_missing": [{"line": ln, "image_id": i} for ln, i in self.first_missing]}


def convert_densefusion(src: str, out: str, image_root: str, report: str | None = None, relative: bool = False,
                        progress: bool | None = None, callback: ProgressCallback | None = None) -> ConvertReport:
    """Write LLaVA JSONL for every record whose image exists; list the others in ``report``.

    Image paths are ``{image_root}/{image_id}{ext}`` (absolute), or ``{image_id}{ext}`` with
    ``relative=True`` (then pass ``image_root`` to the loader). Streams both files: memory does not grow
    with the number of records. ``report`` (default ``OUT.missing.jsonl``) gets one JSON line per
    record without an image (``line``, ``image_id``, ``url``); it is written, empty, even when none is.
    """
    if not os.path.isfile(src):
        raise DataError("data file not found", file=src, kind="missing_file")
    if not os.path.isdir(image_root):
        raise ConfigError(f"--images {image_root}: not a folder")
    report = report or f"{out}.missing.jsonl"
    root = image_root if relative else os.path.abspath(image_root)
    finder = ImageFinder(root)
    result = ConvertReport(output=out, report=report)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{out}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fo, open(report, "w", encoding="utf-8") as fr:
        for rec in iter_caption_records(src, progress, callback):
            if finder.outside(rec):  # refused: listed in the report, never copied through
                result.refused += 1
                fr.write(json.dumps({"line": rec.line, "image_id": rec.image_id, "url": rec.url,
                                     "reason": outside_message(rec.image or rec.image_id, root)}) + "\n")
                continue
            path = finder.find(rec)
            if path is None:
                result.missing += 1
                if len(result.first_missing) < 10:
                    result.first_missing.append((rec.line, rec.image_id))
                fr.write(json.dumps({"line": rec.line, "image_id": rec.image_id, "url": rec.url,
                                     "reason": "image not found"}) + "\n")
                continue
            image = os.path.relpath(path, root) if relative else path
            fo.write(json.dumps(llava_record(rec, image), ensure_ascii=False) + "\n")
            result.written += 1
    os.replace(tmp, out)
    return result
