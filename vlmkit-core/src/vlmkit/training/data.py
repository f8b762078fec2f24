"""Samples -> model features for training, with the bad-sample policy.

Every unusable sample is either an error (policy ``error``) or a counted skip (policy ``skip``) whose
file, line and reason are kept and written out at the end of the stage; never a silent drop and never
a fully masked sample.
"""

from __future__ import annotations

import collections
import hashlib
import random
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..errors import DataError
from ..packing import collate_packed, spliced_length
from ..processing import Features, LabelPolicyError, MultimodalProcessor, collate
from ..samples import Sample, Transform


@dataclass
class Skipped:
    error: DataError


def _split_source(source: str) -> tuple[str | None, int | None]:
    if not source:
        return None, None
    file, _, line = source.rpartition(":")
    if file and line.isdigit():
        return file, int(line)
    return source, None


class SupervisedDataset(torch.utils.data.Dataset):
    """A vlmkit dataset + transforms + processor, returning ``Features`` or ``Skipped``."""

    def __init__(self, dataset: Any, processor: MultimodalProcessor, transforms: Sequence[Transform] = (),
                 policy: str = "error", seed: int = 0):
        self.dataset = dataset
        self.processor = processor
        self.transforms = list(transforms)
        self.policy = policy
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _rng(self, index: int) -> random.Random:
        digest = hashlib.blake2b(f"{self.seed}:{self.epoch}:{index}".encode(), digest_size=8).digest()
        return random.Random(int.from_bytes(digest, "little"))

    def __getitem__(self, index: int) -> Features | Skipped:
        sample: Sample | None = None
        try:
            sample = self.dataset[index]
            rng = self._rng(index)
            for t in self.transforms:
                sample = t(sample, rng)
            feats = self.processor(sample.turns, sample.images, sample.boxes)
        except DataError as exc:
            if self.policy == "error":
                raise
            return Skipped(exc)
        except LabelPolicyError as exc:
            file, line = _split_source(sample.source if sample else "")
            err = DataError(str(exc), file=file, line=line, record_id=sample.id if sample else None,
                            field="conversations", kind="all_masked")
            if self.policy == "error":
                raise err from exc
            return Skipped(err)
        feats.meta["id"] = sample.id
        feats.meta["length"] = spliced_length(feats, self.processor.visual_tokens)
        return feats


class TrainingCollator:
    """Pads (or packs) a batch and counts skipped samples (kept, with their reasons, for the stage report).

    With ``pack_max_tokens`` the batch's samples share rows of at most that many tokens after splicing.
    """

    def __init__(self, pad_token_id: int, views: Sequence[str], padding_side: str = "right",
                 pack_max_tokens: int | None = None):
        self.pad_token_id = pad_token_id
        self.views = list(views)
        self.padding_side = padding_side
        self.pack_max_tokens = pack_max_tokens
        self.skipped: list[DataError] = []

    def __call__(self, items: Sequence[Features | Skipped]) -> dict[str, Any]:
        good = [x for x in items if isinstance(x, Features)]
        self.skipped.extend(x.error for x in items if isinstance(x, Skipped))
        if not good:
            raise DataError("every sample of a batch was unusable; first: " + str(items[0].error))  # type: ignore[union-attr]
        if self.pack_max_tokens:
            lengths = [f.meta["length"] for f in good]
            batch = collate_packed(good, lengths, self.pack_max_tokens, self.pad_token_id, self.views)
            good = [good[i] for row in batch.pop("packed_rows") for i in row]
        else:
            batch = collate(good, self.pad_token_id, self.padding_side, self.views)
        batch["sample_ids"] = [f.meta.get("id") for f in good]
        return batch

    def skip_report(self) -> dict[str, Any]:
        kinds = collections.Counter(e.kind for e in self.skipped)
        return {"skipped": len(self.skipped), "by_kind": dict(kinds),
                "records": [{"file": e.file, "line": e.line, "id": e.record_id, "kind": e.kind, "message": str(e)}
                            for e in self.skipped]}
