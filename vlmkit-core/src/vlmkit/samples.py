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

from .templates import Turn

#: capability names a dataset may provide
IMAGES, BOXES, REGIONS = "images", "boxes", "regions"


@dataclass
class Sample:
    id: str
    turns: list[Turn]
    images: list[Any] = field(default_factory=list)  # PIL.Image.Image, decoded, RGB
    #: per image: (n, 4) xyxy boxes in ORIGINAL image pixels (numpy array or list), or None
    boxes: list[Any] | None = None
    #: per image: region annotations (polygons, labels...) for transforms such as visual prompts
    regions: list[dict[str, Any]] | None = None
    #: where it came from, for error messages: "file.jsonl:123"
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def replace(self, **changes: Any) -> "Sample":
        return replace(self, **changes)


@runtime_checkable
class VisionLanguageDataset(Protocol):
    provides: ClassVar[frozenset[str]] | frozenset[str]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...


@runtime_checkable
class Transform(Protocol):
    def __call__(self, sample: Sample, rng: random.Random) -> Sample: ...


def provides(dataset: Any) -> frozenset[str]:
    return frozenset(getattr(dataset, "provides", frozenset({IMAGES})))
