"""``vip-regions``: a LLaVA JSON file that mixes ordinary records with ViP region records.

The same loader as ``llava-json``, plus: a region record may come without ``conversations`` (its
text is built by the ``vip`` transform from its fields; a placeholder made of its question and answer
text stands in for length grouping), and every region record's type is checked when it is read, so
a record the transform could not handle fails here with its file and line.
"""

from __future__ import annotations

from typing import Any

from vlmkit.data.samples import IMAGES, Sample
from vlmkit.progress import ProgressCallback

from ..llava_json import LlavaJsonDataset
from .records import VIP_CONFIG, region_type

#: fields whose text stands in for a missing conversation (length grouping only)
_TEXT_FIELDS = ("question", "grounding", "answer")


def _declared_type(rec: dict[str, Any]) -> str | None:
    regions = rec.get("regions")
    if isinstance(regions, list) and regions and isinstance(regions[0], dict) and "type" in regions[0]:
        return str(regions[0]["type"])
    if "region_type" in rec:
        return str(rec["region_type"])
    prefix = str(rec.get("id", "")).split("-")[0]
    return prefix if prefix in VIP_CONFIG else None


class VipRegionDataset(LlavaJsonDataset):
    """A ViP-LLaVA mix file (``vip-llava_stage2_mix.json``...): LLaVA records and region records.

    Use it with the ``vip`` transform, which draws the prompts and writes the region records' text.
    ``image_root``: the folder image paths are relative to.
    """

    def __init__(self, path: str, image_root: str | None = None, scan_records: int = 64,
                 index_cache: bool | None = None, progress: bool | None = None,
                 progress_callback: ProgressCallback | None = None):
        super().__init__(path, image_root=image_root, boxes=False, regions=False, scan_records=scan_records,
                         index_cache=index_cache, progress=progress, progress_callback=progress_callback)
        # region annotations live in Sample.meta and only on region records, so "regions" (a promise
        # about every image item, see llava_json) is not declared; the vip transform reads the meta
        self.provides = frozenset({IMAGES})

    def _parse(self, i: int, raw: bytes) -> dict[str, Any]:
        rec = super()._parse(i, raw)
        if "conversations" not in rec and _declared_type(rec) is not None:
            words = " ".join(_words(rec.get(k)) for k in _TEXT_FIELDS)
            rec["conversations"] = [{"from": "human", "value": f"<image>\n{words}".strip()},
                                    {"from": "gpt", "value": ""}]
        return rec

    def __getitem__(self, i: int) -> Sample:
        sample = super().__getitem__(i)
        region_type(sample)  # unknown types and region fields without a type fail here, with file:line
        return sample


def _words(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(_words(v) for v in value if not isinstance(v, (int, float)))
    return ""
