"""What the model does with packed rows (``vlmkit.data.packing`` builds them): position ids that restart
at every sample, and, for flash-attention, the rows laid end to end in one row without padding."""

from __future__ import annotations

from typing import Sequence

import torch

from vlmkit.model.contracts import ImageSpan

#: attention implementations whose packed-sequence path in transformers needs a single row
FLAT_ONLY = ("flash_attention_2", "flash_attention_3")


def segment_position_ids(segments: torch.Tensor) -> torch.Tensor:
    """Position ids restarting at 0 wherever the segment number changes (padding is a segment too)."""
    seq = segments.shape[1]
    idx = torch.arange(seq, device=segments.device).expand_as(segments)
    starts = torch.ones_like(segments, dtype=torch.bool)
    starts[:, 1:] = segments[:, 1:] != segments[:, :-1]
    first = torch.where(starts, idx, torch.zeros_like(idx)).cummax(dim=1).values
    return idx - first


def flatten_rows(embeds: torch.Tensor, positions: torch.Tensor, labels: torch.Tensor | None, valid: torch.Tensor,
                 spans: Sequence[ImageSpan]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, list[ImageSpan]]:
    """Lay the rows' real tokens end to end in one row (padding dropped); spans follow their tokens."""
    flat_index = valid.reshape(-1).long().cumsum(0).reshape(valid.shape) - 1
    out_spans = [ImageSpan(row=0, start=int(flat_index[s.row, s.start]), num_main=s.num_main, num_total=s.num_total,
                           grid=s.grid) for s in spans]
    new_labels = labels[valid].unsqueeze(0) if labels is not None else None
    return embeds[valid].unsqueeze(0), positions[valid].unsqueeze(0), new_labels, out_spans


def padding_fraction(valid: torch.Tensor) -> float:
    """Share of the computed token slots that hold padding."""
    return 1.0 - float(valid.sum()) / max(1, valid.numel())
