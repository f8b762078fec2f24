"""Data-side contracts: what a dataset yields and what a transform receives. Torch-free.

A dataset plugin yields ``Sample`` objects (images decoded, conversation as turns, optional boxes in
original-image pixels) and declares what it ``provides`` so that assembly can refuse, before any
training, a model that needs boxes on a dataset without them. Transforms (e.g. visual prompts) map a
``Sample`` to a ``Sample`` with a seeded ``random.Random``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Protocol, runtime_checkable

from vlmkit.data.templates import Turn

#: capability names a dataset may provide
IMAGES, BOXES, REGIONS = "images", "boxes", "regions"


class SampleSource(str):
    """Where a sample came from: its ``file`` and, in line- or record-based files, its ``line``.

    It reads as ``"file:line"`` wherever a string is shown (messages, reports), and error paths take the
    two fields as they are, so nothing parses the string back. A plain string given by a third-party
    dataset still works: it is then the file, with no line.
    """

    file: str
    line: int | None

    def __new__(cls, file: str | Any, line: int | None = None) -> "SampleSource":
        obj = super().__new__(cls, str(file) if line is None else f"{file}:{int(line)}")
        obj.file, obj.line = str(file), (None if line is None else int(line))
        return obj

    def __reduce__(self) -> tuple[Any, ...]:  # data workers pickle samples and their features
        return SampleSource, (self.file, self.line)


def source_location(source: Any) -> tuple[str | None, int | None]:
    """``(file, line)`` of a sample's ``source``, for ``DataError``; ``(None, None)`` when it has none."""
    if isinstance(source, SampleSource):
        return source.file, source.line
    return (str(source) if source else None), None


@dataclass
class Sample:
    id: str
    turns: list[Turn]
    images: list[Any] = field(default_factory=list)  # PIL.Image.Image, decoded, RGB
    #: per image: (n, 4) xyxy boxes in ORIGINAL image pixels (numpy array or list), or None
    boxes: list[Any] | None = None
    #: per image: region annotations (polygons, labels...) for transforms such as visual prompts
    regions: list[dict[str, Any]] | None = None
    #: where it came from, for error messages: ``SampleSource(file, line)`` (reads as "file.jsonl:123")
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def replace(self, **changes: Any) -> "Sample":
        return replace(self, **changes)


@runtime_checkable
class VisionLanguageDataset(Protocol):
    """Samples by index. Optional: ``text_sample(i)``, the sample without its images decoded, which passes
    that read only the text use when a dataset has it (chance rates in ``inference.evaluation``)."""

    provides: ClassVar[frozenset[str]] | frozenset[str]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...


@runtime_checkable
class Transform(Protocol):
    def __call__(self, sample: Sample, rng: random.Random) -> Sample: ...


def provides(dataset: Any) -> frozenset[str]:
    return frozenset(getattr(dataset, "provides", frozenset({IMAGES})))
