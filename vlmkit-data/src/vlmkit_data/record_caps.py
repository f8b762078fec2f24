"""Per-record limits: how much one record may ask of the pipeline before anything is decoded or computed.

A record is data, and data can be hostile or broken: a line of a gigabyte, ten thousand turns, a hundred
thousand boxes (MG-LLaVA's NMS is quadratic in them), hundreds of images. Each limit is far above what the
seed datasets hold (LLaVA-665K's longest conversation has 68 turns; MG-LLaVA's detector keeps at most 100
boxes per image after its filter), so no real record meets it. A record over a limit is a ``DataError`` of kind
``over_limit`` naming the field and the limit: an error, or a counted skip under ``on_bad_sample: skip``, and
``vlmkit data check`` reports it the same way. A dataset's ``limits`` argument changes them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from vlmkit.errors import ConfigError


@dataclass(frozen=True)
class RecordLimits:
    #: bytes of one record's JSON (read before it is parsed)
    max_record_bytes: int = 16 * 1024 * 1024
    #: turns in ``conversations``
    max_turns: int = 1024
    #: images of one record
    max_images: int = 64
    #: characters of all turns together
    max_text_chars: int = 1_000_000
    #: boxes of one image (a record's own, or a box file's before filtering)
    max_boxes: int = 10_000

    @classmethod
    def parse(cls, value: dict[str, Any] | None, where: str) -> "RecordLimits":
        if value is None:
            return cls()
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: limits must be a mapping of {', '.join(f.name for f in fields(cls))}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown limit(s) {unknown}; known: {', '.join(sorted(known))}")
        for k, v in value.items():
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{where}.{k}: expected an integer >= 1, got {v!r}")
        return replace(cls(), **value)


DEFAULT_LIMITS = RecordLimits()
OVER_LIMIT = "over_limit"


def over(what: str, n: int, limit: int, name: str) -> str:
    return f"{what}: {n:,}, over the limit of {limit:,} per record ({name}; a dataset's limits argument changes it)"
