"""Image-token splicing: put each image's visual tokens where its placeholder stands.

One routine covers every LLaVA-family layout: any number of images per sample, a different number of
tokens per image, extra token groups (object tokens) after an image's main tokens, text-only samples
in the same batch (no extra rows), and right or left padding. It is vectorised: one gather for text,
one scatter for visual tokens, no per-sample Python loop over sequence positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from vlmkit.model.contracts import IGNORE_INDEX, IMAGE_PLACEHOLDER, ImageSpan


@dataclass
class Spliced:
    inputs_embeds: torch.Tensor  # (B, L', D)
    attention_mask: torch.Tensor  # (B, L') long
    position_ids: torch.Tensor  # (B, L')
    labels: torch.Tensor | None  # (B, L') with IGNORE_INDEX on visual and pad positions
    spans: list[ImageSpan]
    #: packed rows only: the sample number of every output position (visual tokens take their placeholder's), 0 = pad
    segment_ids: torch.Tensor | None = None


def splice(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    labels: torch.Tensor | None,
    blocks: Sequence[torch.Tensor],
    embed: Callable[[torch.Tensor], torch.Tensor],
    *,
    num_main: Sequence[int] | None = None,
    grids: Sequence[tuple[int, int] | None] | None = None,
    padding_side: str = "right",
    max_length: int | None = None,
    segment_ids: torch.Tensor | None = None,
) -> Spliced:
    """Replace each ``IMAGE_PLACEHOLDER`` in ``input_ids`` by the matching block of ``blocks``.

    ``blocks[k]`` is (n_k, D): the k-th placeholder in row-major order (sample 0's images first).
    Sequences longer than ``max_length`` after splicing are cut at the end (the data pipeline is
    expected to have made room; this is a safety net, never a silent reorder). ``segment_ids`` (packed
    rows, see ``vlmkit.data.packing``) are carried to the output positions like the labels.
    """
    bsz, seq = input_ids.shape
    device = input_ids.device
    valid = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    is_img = (input_ids == IMAGE_PLACEHOLDER) & valid
    n_placeholders = int(is_img.sum())
    if n_placeholders != len(blocks):
        per_row = is_img.sum(1).tolist()
        raise ValueError(f"splice: {n_placeholders} image placeholders (per sample: {per_row}) but {len(blocks)} images")

    widths = valid.long()
    if blocks:
        lens = torch.tensor([b.shape[0] for b in blocks], device=device, dtype=torch.long)
        widths = widths.masked_scatter(is_img, lens)
    end = widths.cumsum(1)
    start = end - widths
    total = end[:, -1]
    cap = total.clamp(max=max_length) if max_length is not None else total
    out_len = int(cap.max()) if bsz else 0
    offset = (out_len - cap) if padding_side == "left" else torch.zeros_like(cap)

    text_pos = valid & ~is_img
    text_ids = input_ids[text_pos]
    text_emb = embed(text_ids)
    dim, dtype = text_emb.shape[-1], text_emb.dtype
    out = text_emb.new_zeros(bsz, out_len, dim)

    rows = text_pos.nonzero(as_tuple=True)[0]
    cols = start[text_pos]
    keep = cols < cap[rows]
    out[rows[keep], cols[keep] + offset[rows[keep]]] = text_emb[keep]

    new_labels = None
    if labels is not None:
        new_labels = torch.full((bsz, out_len), IGNORE_INDEX, dtype=labels.dtype, device=device)
        new_labels[rows[keep], cols[keep] + offset[rows[keep]]] = labels[text_pos][keep]
    new_segments = None
    if segment_ids is not None:
        new_segments = torch.zeros((bsz, out_len), dtype=torch.long, device=device)
        new_segments[rows[keep], cols[keep] + offset[rows[keep]]] = segment_ids[text_pos][keep].long()

    spans: list[ImageSpan] = []
    if blocks:
        img_rows, _ = is_img.nonzero(as_tuple=True)
        img_start = start[is_img]
        flat = torch.cat([b.to(dtype) for b in blocks], 0)
        tok_rows = img_rows.repeat_interleave(lens)
        first = torch.repeat_interleave(img_start, lens)
        within = torch.arange(flat.shape[0], device=device) - torch.repeat_interleave(lens.cumsum(0) - lens, lens)
        tok_cols = first + within
        keep_v = tok_cols < cap[tok_rows]
        out[tok_rows[keep_v], tok_cols[keep_v] + offset[tok_rows[keep_v]]] = flat[keep_v]
        if new_segments is not None:
            tok_segments = segment_ids[is_img].long().repeat_interleave(lens)
            new_segments[tok_rows[keep_v], tok_cols[keep_v] + offset[tok_rows[keep_v]]] = tok_segments[keep_v]
        starts = (img_start + offset[img_rows]).tolist()
        for k, (r, s) in enumerate(zip(img_rows.tolist(), starts)):
            n_total = blocks[k].shape[0]
            spans.append(ImageSpan(row=r, start=s, num_main=num_main[k] if num_main else n_total, num_total=n_total,
                                   grid=grids[k] if grids else None))

    positions = torch.arange(out_len, device=device).unsqueeze(0)
    new_mask = ((positions >= offset[:, None]) & (positions < (offset + cap)[:, None])).long()
    position_ids = (positions - offset[:, None]).clamp(min=0)
    return Spliced(out, new_mask, position_ids, new_labels, spans, new_segments)
