"""Multimodal sequence packing: several samples share a row, and none of them sees another.

The collator packs a batch's samples into as few rows as fit ``max_tokens`` (first-fit decreasing on
each sample's length *after* splicing, i.e. counting its visual tokens) and marks every token with
its sample's segment number (1, 2, ... within the row; 0 for padding). The model splices as usual,
carries the segment numbers through the splice, and gives the LLM position ids that restart at 0 at
every sample and no 2-D attention mask. transformers (>= 4.54) turns restarting position ids into a
block-diagonal causal mask for sdpa/eager/flex attention, and into variable-length (cu_seqlens) calls
for flash-attention; flash-attention only does so for a single row, so for it the packed rows are
laid end to end in one row without any padding. What the model does with packed rows is in
``vlmkit.model.packed_rows``; this module is the data side (planning rows, collating them).

The batch keeps its samples (packing changes rows, not the samples of an optimizer step), so loss
and gradients equal the padded batch's; only the amount of padding computed on changes. Each
sample's first label is ignored: in a row it would otherwise be predicted from the previous sample.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from vlmkit.data.processing import Features, stack_images
from vlmkit.model.contracts import IGNORE_INDEX


def spliced_length(features: Features, visual_tokens: Callable[..., int]) -> int:
    """A sample's length once its placeholders are replaced by visual tokens (main tokens only)."""
    n = len(features.input_ids) - features.num_images
    for i in range(features.num_images):
        sizes, extra = features.visual_sizes(i)
        n += visual_tokens(sizes, **extra)
    return n


def plan_rows(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """First-fit decreasing: sample indices per row, each row's total length <= ``max_tokens``.

    A sample longer than ``max_tokens`` gets a row of its own (it was already cut to the model's
    ``max_length`` by the processor). Within a row, samples keep their batch order.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    room: list[int] = []
    for i in order:
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(max_tokens - lengths[i])
    return [sorted(r) for r in rows]


def collate_packed(features: Sequence[Features], lengths: Sequence[int], max_tokens: int, pad_token_id: int,
                   views: Sequence[str]) -> dict[str, Any]:
    """Pack samples into rows; ``lengths`` are their lengths after splicing.

    Returns the usual batch keys plus ``segment_ids`` (R, T): sample number within the row, 0 = pad.
    Images are ordered as their placeholders appear row by row, as ``splice`` expects.
    """
    rows = plan_rows(lengths, max_tokens)
    ordered = [features[i] for row in rows for i in row]
    width = max(sum(len(features[i].input_ids) for i in row) for row in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    segments = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for k, i in enumerate(row):
            f = features[i]
            n = len(f.input_ids)
            ids[r, at:at + n] = torch.tensor(f.input_ids, dtype=torch.long)
            lab = torch.tensor(f.labels, dtype=torch.long)
            lab[0] = IGNORE_INDEX  # never a target: it would be predicted from the previous sample's last token
            labels[r, at:at + n] = lab
            segments[r, at:at + n] = k + 1
            at += n
    batch: dict[str, Any] = {"input_ids": ids, "attention_mask": (segments > 0).long(), "labels": labels,
                             "segment_ids": segments}
    batch.update(stack_images(ordered, views))
    batch["packed_rows"] = rows
    return batch
