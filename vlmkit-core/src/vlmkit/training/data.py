"""Samples -> model features for training, with the bad-sample policy and the stage's data report.

Every unusable sample is either an error (policy ``error``) or a counted skip (policy ``skip``); never a
silent drop and never a fully masked sample. Under ``skip`` the dataset hands out the next usable
sample in the skipped one's place, so batches stay full (a batch of only bad samples does not stop
training). What happened to each sample (skipped, or truncated to ``max_length``) travels inside the
batch as ``data_report``, because the collator may run in a DataLoader worker whose memory the trainer
never sees; the trainer adds the reports up, keeps them in its checkpoints, and writes them out.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from vlmkit.data.packing import collate_packed, spliced_length
from vlmkit.data.processing import Features, LabelPolicyError, MultimodalProcessor, collate
from vlmkit.data.samples import Sample, Transform, source_location
from vlmkit.errors import DataError

#: how many samples after a bad one are tried in its place before the data is declared unusable
MAX_REPLACEMENTS = 64
#: the batch key that carries the data report (the trainer removes it before the forward pass)
REPORT_KEY = "data_report"


def skip_record(err: DataError) -> dict[str, Any]:
    """A skipped sample as plain data (exceptions with keyword fields do not survive worker pickling)."""
    return {"file": err.file, "line": err.line, "id": err.record_id, "kind": err.kind, "message": str(err)}


class SupervisedDataset(torch.utils.data.Dataset):
    """A vlmkit dataset + transforms + processor, returning ``Features`` (skips recorded in their meta)."""

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

    def features(self, index: int) -> Features:
        """One sample processed; a DataError (with file, line, id and field) when it cannot be used."""
        sample: Sample | None = None
        try:
            sample = self.dataset[index]
            rng = self._rng(index)
            for t in self.transforms:
                sample = t(sample, rng)
            feats = self.processor(sample.turns, sample.images, sample.boxes)
        except LabelPolicyError as exc:
            file, line = source_location(sample.source if sample else None)
            raise DataError(str(exc), file=file, line=line, record_id=sample.id if sample else None,
                            field="conversations", kind="all_masked") from exc
        feats.meta["id"] = sample.id
        feats.meta["source"] = sample.source
        feats.meta["length"] = spliced_length(feats, self.processor.visual_tokens)
        return feats

    def __getitem__(self, index: int) -> Features:
        skipped: list[dict[str, Any]] = []
        n = len(self)
        for attempt in range(min(n, MAX_REPLACEMENTS + 1)):
            try:
                feats = self.features((index + attempt) % n)
            except DataError as exc:
                if self.policy == "error":
                    raise
                skipped.append(skip_record(exc))
                continue
            feats.meta["skipped"] = skipped
            return feats
        raise DataError(f"{len(skipped)} samples in a row from record {index} on are unusable (on_bad_sample: skip "
                        f"replaces a bad sample with the next usable one); first: {skipped[0]['message']}")


class TrainingCollator:
    """Pads (or packs) a batch and attaches its data report (skipped and truncated samples).

    With ``pack_max_tokens`` the batch's samples share rows of at most that many tokens after splicing.
    """

    def __init__(self, pad_token_id: int, views: Sequence[str], padding_side: str = "right",
                 pack_max_tokens: int | None = None):
        self.pad_token_id = pad_token_id
        self.views = list(views)
        self.padding_side = padding_side
        self.pack_max_tokens = pack_max_tokens

    def __call__(self, items: Sequence[Features]) -> dict[str, Any]:
        good = list(items)
        if self.pack_max_tokens:
            lengths = [f.meta["length"] for f in good]
            batch = collate_packed(good, lengths, self.pack_max_tokens, self.pad_token_id, self.views)
            good = [good[i] for row in batch.pop("packed_rows") for i in row]
        else:
            batch = collate(good, self.pad_token_id, self.padding_side, self.views)
        batch["sample_ids"] = [f.meta.get("id") for f in good]
        batch[REPORT_KEY] = batch_report(good)
        return batch


def batch_report(features: Sequence[Features]) -> dict[str, list[dict[str, Any]]]:
    truncated = []
    for f in features:
        if "truncated_from" in f.meta:
            file, line = source_location(f.meta.get("source"))
            truncated.append({"file": file, "line": line, "id": f.meta.get("id"), "length": f.meta["truncated_from"],
                              "kept": len(f.input_ids)})
    return {"skipped": [r for f in features for r in f.meta.get("skipped", [])], "truncated": truncated}


@dataclass
class DataReport:
    """What the stage's data pipeline did: every skipped sample with its reason, every truncated one."""

    skipped: list[dict[str, Any]]
    truncated: list[dict[str, Any]]

    @classmethod
    def empty(cls) -> "DataReport":
        return cls([], [])

    def add(self, batch_report: dict[str, list[dict[str, Any]]]) -> None:
        self.skipped.extend(batch_report.get("skipped", []))
        self.truncated.extend(batch_report.get("truncated", []))

    @classmethod
    def merged(cls, parts: Sequence["DataReport"]) -> "DataReport":
        """One report from several processes' reports."""
        out = cls.empty()
        for p in parts:
            out.add({"skipped": p.skipped, "truncated": p.truncated})
        return out

    def as_dict(self) -> dict[str, Any]:
        """Counts of distinct records (a record met again in a later epoch, or drawn in a skipped one's
        place, counts once), and how often each event happened in all."""
        import collections

        skipped, truncated = _distinct(self.skipped), _distinct(self.truncated)
        return {"skipped": len(skipped), "by_kind": dict(collections.Counter(r["kind"] for r in skipped)),
                "truncated": len(truncated), "skip_events": len(self.skipped),
                "truncation_events": len(self.truncated), "records": skipped, "truncated_records": truncated,
                "events": {"skipped": self.skipped, "truncated": self.truncated}}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "DataReport":
        events = doc.get("events") or {}
        return cls(list(events.get("skipped", [])), list(events.get("truncated", [])))


def _distinct(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[tuple, dict[str, Any]] = {}
    for r in records:
        seen.setdefault((r.get("file"), r.get("line"), r.get("id"), r.get("kind")), r)
    return list(seen.values())
