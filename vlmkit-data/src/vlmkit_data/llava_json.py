"""LLaVA conversation data (a JSON array or JSON lines), read lazily, one record at a time.

Record format (LLaVA's)::

    {"id": "000123", "image": "coco/000123.jpg" | ["a.jpg", "b.jpg"] | absent,
     "conversations": [{"from": "human", "value": "<image>\\nWhat is ..."}, {"from": "gpt", "value": "..."}],
     "boxes": [[[x1, y1, x2, y2], ...], ...]   # optional, per image, original pixels
     ...}                                       # any other field goes to ``Sample.meta``

Opening a file builds a byte-offset index (see ``json_index``); ``dataset[i]`` reads, checks and decodes
one record. Every problem is a ``DataError`` naming the file, the record's line, its id and the field,
with a ``kind``; no record is ever skipped silently.

Image tags follow LLaVA: for a single image the ``<image>`` tag is moved to the start of its turn
(``"<image>\\n" + text``), and a record without a tag gets one in front of its first user turn. With
several images the tags stay where they are and their number must equal the number of images.

Boxes and ``provides``: whether a dataset provides boxes cannot be known without reading every record,
so ``boxes=None`` (the default) scans the first ``scan_records`` records and declares boxes when every
image record among them has them; ``boxes=True`` declares them outright and ``boxes=False`` never does.
Once boxes are declared, an image record without boxes is an error when it is read (a model that needs
boxes must not receive ``None``). Records that carry boxes always pass them on, declared or not.
``regions`` works the same way. The scan parses those first records, so one that is not valid JSON
fails the constructor (with its line) rather than the first epoch.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from PIL import Image

from vlmkit.data.image_files import UndecodableImage, decode_image
from vlmkit.data.samples import BOXES, IMAGES, REGIONS, Sample, SampleSource
from vlmkit.data.templates import IMAGE_TOKEN, Turn
from vlmkit.errors import DataError
from vlmkit.progress import ProgressCallback, ProgressReporter

from .box_checks import box_problem
from .json_index import CHUNK_SIZE, RecordIndex, cache_path, load_or_build_index, write_cache
from .paths import OUTSIDE_ROOT, outside_message, resolve_under
from .record_caps import OVER_LIMIT, RecordLimits, over

#: record roles -> template roles
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
#: record fields that become Sample fields rather than meta
_RESERVED = ("id", "image", "conversations", "boxes", "regions")


class LlavaJsonDataset:
    """A LLaVA JSON/JSONL file as a ``VisionLanguageDataset`` of ``Sample``s.

    ``image_root``: folder the ``image`` paths are relative to (default: the data file's folder). A path
    that leads outside it is refused (``paths.py``) unless ``allow_outside_root``.
    ``index_cache``: keep the byte index next to the file (``None``: only for files over 8 MiB).
    ``progress``: show a progress bar while indexing/scanning (``None``: on a terminal, for big files);
    ``progress_callback(done, total)`` is called either way.
    ``box_file``: an MG-LLaVA box file (``vlmkit data boxes``) joined by record id, filtered as MG-LLaVA
    filters; a record without one is an error (``missing_boxes: empty`` gives it no boxes, counted).
    """

    #: replaced per instance once the records have been looked at (see the module docstring)
    provides: frozenset[str] = frozenset({IMAGES})

    def __init__(self, path: str, image_root: str | None = None, boxes: bool | None = None,
                 regions: bool | None = None, scan_records: int = 64, index_cache: bool | None = None,
                 progress: bool | None = None, progress_callback: ProgressCallback | None = None,
                 allow_outside_root: bool = False, box_file: str | None = None, missing_boxes: str = "error",
                 limits: dict[str, int] | None = None):
        self.limits = RecordLimits.parse(limits, "dataset 'llava-json': limits")
        if not os.path.isfile(path):
            raise DataError("data file not found", file=path, kind="missing_file")
        self.path = os.fspath(path)
        self.allow_outside_root = allow_outside_root
        self.image_root = image_root if image_root is not None else os.path.dirname(os.path.abspath(path))
        self.progress, self.progress_callback = progress, progress_callback
        self.index_cache = index_cache
        self.index: RecordIndex = load_or_build_index(self.path, cache=index_cache, progress=progress,
                                                      callback=progress_callback)
        self._lengths: list[int] | None = None
        unknown = boxes is None or regions is None
        scanned = self._scan(min(scan_records, len(self))) if unknown else []
        with_image = [r for r in scanned if _image_paths(r)]

        def declared(flag: bool | None, key: str) -> bool:
            if flag is not None:
                return flag
            return bool(with_image) and all(r.get(key) is not None for r in with_image)

        self.require_regions = declared(regions, "regions")
        # an MG-LLaVA box file (``vlmkit data boxes`` makes one) gives the boxes instead of the records
        self.box_join = None
        if box_file is not None:
            from .box_files import BoxJoin

            self.box_join = BoxJoin(_Unjoined(self), box_file, missing=missing_boxes,
                                    max_boxes=self.limits.max_boxes)
        self.require_boxes = False if box_file is not None else declared(boxes, "boxes")
        self.provides: frozenset[str] = frozenset(
            {IMAGES} | ({BOXES} if self.require_boxes or box_file is not None else set())
            | ({REGIONS} if self.require_regions else set()))

    def __getstate__(self) -> dict[str, Any]:
        """Picklable for spawned DataLoader workers: a progress callback (often a lambda) stays behind."""
        state = dict(self.__dict__)
        state["progress_callback"] = None
        return state

    # -- raw records -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.index)

    def _check_index(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"record {i} out of range for {n} records in {self.path}")
        return i % n

    def line(self, i: int) -> int:
        return int(self.index.lines[self._check_index(i)])

    def source(self, i: int) -> SampleSource:
        return SampleSource(self.path, self.line(i))

    def _raw(self, i: int) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(int(self.index.starts[i]))
            return f.read(int(self.index.ends[i] - self.index.starts[i]))

    def record(self, i: int) -> dict[str, Any]:
        """The parsed JSON object of record ``i`` (no checks beyond being a JSON object and its size)."""
        i = self._check_index(i)
        size = int(self.index.ends[i] - self.index.starts[i])
        if size > self.limits.max_record_bytes:
            raise self._error(i, None, over("record size in bytes", size, self.limits.max_record_bytes,
                                            "max_record_bytes"), OVER_LIMIT)
        return self._parse(i, self._raw(i))

    def _parse(self, i: int, raw: bytes) -> dict[str, Any]:
        try:
            rec = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise self._error(i, None, f"malformed JSON: {exc}", "malformed_json") from None
        if not isinstance(rec, dict):
            raise self._error(i, None, f"a record must be a JSON object, got {type(rec).__name__}", "malformed_json")
        return rec

    def _error(self, i: int, rec: dict[str, Any] | None, message: str, kind: str,
               field: str | None = None) -> DataError:
        rid = rec.get("id") if isinstance(rec, dict) else None
        return DataError(message, file=self.path, line=int(self.index.lines[i]),
                         record_id=None if rid is None else str(rid), field=field, kind=kind)

    # -- samples -----------------------------------------------------------------------------------------
    def __getitem__(self, i: int) -> Sample:
        if self.box_join is not None:
            return self.box_join[i]
        return self.sample(i)

    def sample(self, i: int) -> Sample:
        """Record ``i`` as a Sample, with the record's own boxes (if any), before a box file's join."""
        i = self._check_index(i)
        rec = self.record(i)
        paths = self._image_paths_checked(i, rec)
        self._check_limits(i, rec, paths)
        turns = self._turns(i, rec, len(paths))
        images = [self.load_image(i, rec, p, f"image[{k}]" if isinstance(rec.get("image"), list) else "image")
                  for k, p in enumerate(paths)]
        boxes = self._boxes(i, rec, len(paths))
        for k, per_image in enumerate(boxes or []):
            for j, b in enumerate(per_image):
                found = box_problem(b, images[k].size)
                if found:
                    raise self._error(i, rec, found[0], found[1], f"boxes[{k}][{j}]")
        regions = self._regions(i, rec, len(paths))
        meta = {k: v for k, v in rec.items() if k not in _RESERVED}
        meta["index"] = i
        rid = rec.get("id")
        return Sample(id=str(rid) if rid is not None else str(i), turns=turns, images=images, boxes=boxes,
                      regions=regions, source=self.source(i), meta=meta)

    def text_sample(self, i: int) -> Sample:
        """Record ``i``'s conversation and fields without opening its images (``images`` empty): for passes
        that read only the text, such as chance rates over a held-out set. The turns are checked as in
        :meth:`sample`, against the number of images the record names."""
        i = self._check_index(i)
        rec = self.record(i)
        turns = self._turns(i, rec, len(_image_paths(rec)))
        meta = {k: v for k, v in rec.items() if k not in _RESERVED}
        meta["index"] = i
        rid = rec.get("id")
        return Sample(id=str(rid) if rid is not None else str(i), turns=turns, images=[], source=self.source(i),
                      meta=meta)

    def _check_limits(self, i: int, rec: dict[str, Any], paths: list[str]) -> None:
        """The record's size against ``self.limits``, before any image is opened or box computed."""
        lim = self.limits
        if len(paths) > lim.max_images:
            raise self._error(i, rec, over("images", len(paths), lim.max_images, "max_images"), OVER_LIMIT, "image")
        conv = rec.get("conversations")
        if isinstance(conv, list):
            if len(conv) > lim.max_turns:
                raise self._error(i, rec, over("turns", len(conv), lim.max_turns, "max_turns"), OVER_LIMIT,
                                  "conversations")
            chars = sum(len(t["value"]) for t in conv if isinstance(t, dict) and isinstance(t.get("value"), str))
            if chars > lim.max_text_chars:
                raise self._error(i, rec, over("characters", chars, lim.max_text_chars, "max_text_chars"),
                                  OVER_LIMIT, "conversations")
        boxes = rec.get("boxes")
        if isinstance(boxes, list):
            per_image = boxes if boxes and all(isinstance(b, list) and (not b or isinstance(b[0], list))
                                               for b in boxes) else [boxes]
            for k, b in enumerate(per_image):
                if len(b) > lim.max_boxes:
                    raise self._error(i, rec, over("boxes", len(b), lim.max_boxes, "max_boxes"), OVER_LIMIT,
                                      f"boxes[{k}]")

    def _image_paths_checked(self, i: int, rec: dict[str, Any]) -> list[str]:
        img = rec.get("image")
        if img is None:
            return []
        if isinstance(img, str):
            return [img]
        if isinstance(img, list) and all(isinstance(p, str) for p in img):
            return list(img)
        raise self._error(i, rec, "'image' must be a path or a list of paths", "missing_field", "image")

    def _turns(self, i: int, rec: dict[str, Any], n_images: int) -> list[Turn]:
        conv = rec.get("conversations")
        if conv is None:
            raise self._error(i, rec, "missing 'conversations'", "missing_field", "conversations")
        if not isinstance(conv, list):
            raise self._error(i, rec, "'conversations' must be a list of {from, value}", "missing_field",
                              "conversations")
        turns: list[Turn] = []
        for k, t in enumerate(conv):
            where = f"conversations[{k}]"
            if not isinstance(t, dict):
                raise self._error(i, rec, "a turn must be an object {from, value}", "missing_field", where)
            for key in ("from", "value"):
                if key not in t:
                    raise self._error(i, rec, f"missing '{key}'", "missing_field", f"{where}.{key}")
            if not isinstance(t["value"], str):
                raise self._error(i, rec, "'value' must be a string", "missing_field", f"{where}.value")
            role = ROLES.get(t["from"]) if isinstance(t["from"], str) else None
            if role is None:
                raise self._error(i, rec, f"unknown role {t['from']!r}; expected human, gpt or system", "bad_role",
                                  f"{where}.from")
            turns.append(Turn(role, t["value"]))
        body = turns[1:] if turns and turns[0].role == "system" else turns
        if not body:
            raise self._error(i, rec, "the conversation has no user or assistant turn", "empty_conversation",
                              "conversations")
        offset = len(turns) - len(body)
        for k, t in enumerate(body):
            expected = "user" if k % 2 == 0 else "assistant"
            if t.role != expected:
                raise self._error(i, rec, f"expected a {'human' if expected == 'user' else 'gpt'} turn here "
                                  f"(turns alternate human/gpt after an optional leading system turn), got "
                                  f"'{conv[k + offset]['from']}'", "bad_role", f"conversations[{k + offset}].from")
        return self._place_image_tags(i, rec, turns, offset, n_images)

    def _place_image_tags(self, i: int, rec: dict[str, Any], turns: list[Turn], first_user: int,
                          n_images: int) -> list[Turn]:
        counts = [t.text.count(IMAGE_TOKEN) for t in turns]
        n_tags = sum(counts)
        if n_images == 0:
            if n_tags:
                raise self._error(i, rec, f"{n_tags} {IMAGE_TOKEN} tag(s) but the record has no image",
                                  "placeholder_mismatch", "conversations")
            return turns
        if n_images == 1:
            if n_tags > 1:
                raise self._error(i, rec, f"{n_tags} {IMAGE_TOKEN} tags for 1 image", "placeholder_mismatch",
                                  "conversations")
            k = counts.index(1) if n_tags else first_user
            text = turns[k].text.replace(IMAGE_TOKEN, "").strip()
            turns[k] = Turn(turns[k].role, f"{IMAGE_TOKEN}\n{text}")
            return turns
        if n_tags != n_images:
            raise self._error(i, rec, f"{n_tags} {IMAGE_TOKEN} tag(s) for {n_images} images (with several images "
                              "every image needs its tag)", "placeholder_mismatch", "conversations")
        return turns

    def load_image(self, i: int, rec: dict[str, Any], rel: str, field: str) -> Image.Image:
        """Record ``i``'s image at ``rel`` (under the image root), RGB; a ``DataError`` naming the file, the
        record and ``field`` when it is outside the root, missing or does not decode."""
        path, inside = resolve_under(self.image_root, rel)
        if not inside and not self.allow_outside_root:
            raise self._error(i, rec, outside_message(rel, self.image_root), OUTSIDE_ROOT, field)
        try:
            return decode_image(path)
        except FileNotFoundError as exc:
            raise self._error(i, rec, str(exc), "missing_image", field) from None
        except UndecodableImage as exc:
            raise self._error(i, rec, str(exc), "corrupt_image", field) from None

    def _boxes(self, i: int, rec: dict[str, Any], n_images: int) -> list[np.ndarray] | None:
        raw = rec.get("boxes")
        if raw is None:
            if self.require_boxes and n_images:
                raise self._error(i, rec, "this dataset declares boxes but the record has none", "missing_field",
                                  "boxes")
            return None
        if not isinstance(raw, list):
            raise self._error(i, rec, "'boxes' must be a list (per image) of [x1, y1, x2, y2] lists", "missing_field",
                              "boxes")
        # a single-image record may give its boxes without the per-image list
        if n_images == 1 and raw and isinstance(raw[0], list) and raw[0] and not isinstance(raw[0][0], list):
            raw = [raw]
        if len(raw) != n_images:
            raise self._error(i, rec, f"{len(raw)} box lists for {n_images} image(s)", "missing_field", "boxes")
        out = []
        for k, per_image in enumerate(raw):
            try:
                arr = np.asarray(per_image if per_image else np.zeros((0, 4)), dtype=np.float32)
            except (TypeError, ValueError):
                arr = None
            if arr is None or arr.ndim != 2 or arr.shape[1] != 4:
                raise self._error(i, rec, "boxes must be [[x1, y1, x2, y2], ...] per image", "missing_field",
                                  f"boxes[{k}]")
            out.append(arr)
        return out

    def _regions(self, i: int, rec: dict[str, Any], n_images: int) -> list[dict[str, Any]] | None:
        raw = rec.get("regions")
        if raw is None:
            if self.require_regions and n_images:
                raise self._error(i, rec, "this dataset declares regions but the record has none", "missing_field",
                                  "regions")
            return None
        if not isinstance(raw, list) or len(raw) != n_images or not all(isinstance(r, dict) for r in raw):
            raise self._error(i, rec, f"'regions' must be one object per image ({n_images})", "missing_field",
                              "regions")
        return raw

    # -- lengths for grouping ------------------------------------------------------------------------------
    def _scan(self, n: int) -> list[dict[str, Any]]:
        """The first ``n`` records that parse (a bad one is reported when it is read for training, where
        the stage's bad-sample policy decides; it must not fail the whole dataset here)."""
        out = []
        for i in range(n):
            try:
                out.append(self.record(i))
            except DataError:
                continue
        return out

    def modality_lengths(self) -> list[int]:
        """LLaVA's grouping length per record: whitespace words over all turns, negative if text-only.

        Computed from the raw records in one sequential pass (with progress) and cached, in memory and,
        when the index is cached on disk, with it.
        """
        if self._lengths is None:
            cached = self.index.extras.get("modality_lengths")
            if cached is not None and len(cached) == len(self):
                self._lengths = cached.astype(np.int64).tolist()
            else:
                self._lengths = self._scan_lengths()
                if self.index_cache or (self.index_cache is None and cache_path(self.path).exists()):
                    self.index.extras["modality_lengths"] = np.asarray(self._lengths, dtype=np.int32)
                    write_cache(self.path, self.index)
        return list(self._lengths)

    def _scan_lengths(self) -> list[int]:
        lengths: list[int] = []
        total = len(self)
        with ProgressReporter(f"lengths of {os.path.basename(self.path)}", int(self.index.ends[-1]) if total else 0,
                              self.progress, self.progress_callback) as rep, open(self.path, "rb") as f:
            buf, buf_start = b"", 0
            for i in range(total):
                s, e = int(self.index.starts[i]), int(self.index.ends[i])
                if e > buf_start + len(buf):  # refill: read sequentially in big blocks
                    f.seek(s)
                    buf, buf_start = f.read(max(CHUNK_SIZE, e - s)), s
                    rep.update(s)
                rec = self._parse(i, buf[s - buf_start:e - buf_start])
                conv = rec.get("conversations")
                if not isinstance(conv, list):
                    raise self._error(i, rec, "missing 'conversations'", "missing_field", "conversations")
                turns = [Turn("", t.get("value", "") if isinstance(t, dict) else "") for t in conv]
                if not all(isinstance(t.text, str) for t in turns):
                    raise self._error(i, rec, "'value' must be a string", "missing_field", "conversations")
                lengths.append(modality_length(turns, bool(_image_paths(rec))))
            rep.update(int(self.index.ends[-1]) if total else 0)
        return lengths


class _Unjoined:
    """The dataset as BoxJoin sees it: samples before the join (so the join does not call itself)."""

    def __init__(self, dataset: LlavaJsonDataset):
        self.dataset = dataset
        self.provides = frozenset({IMAGES})

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Sample:
        return self.dataset.sample(i)


def modality_length(turns: Any, has_image: bool) -> int:
    """LLaVA's length for grouping: whitespace words over all turns, negative for text-only."""
    n = sum(len(t.text.split()) for t in turns)
    return n if has_image else -n


def _image_paths(rec: dict[str, Any]) -> list[Any]:
    img = rec.get("image")
    if img is None:
        return []
    return [img] if isinstance(img, str) else list(img) if isinstance(img, list) else [img]
