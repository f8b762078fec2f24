"""Splicing against a straightforward per-sample reference, plus hand-checked layouts."""

from __future__ import annotations

import pytest
import torch

from vlmkit.model.contracts import IGNORE_INDEX as IGN
from vlmkit.model.contracts import IMAGE_PLACEHOLDER as IMG
from vlmkit.model.splice import splice

D = 3


def embed(ids):
    # each id embeds to a distinctive constant vector so positions are easy to check
    return ids.float().unsqueeze(-1).repeat(1, D) if ids.dim() == 1 else ids.float().unsqueeze(-1).repeat(1, 1, D)


def reference(ids, mask, labels, blocks, side):
    """Loop-based reference: expand each row, then pad."""
    rows, rlabels = [], []
    k = 0
    for r in range(ids.shape[0]):
        e, lab = [], []
        for t in range(ids.shape[1]):
            if not mask[r, t]:
                continue
            if ids[r, t] == IMG:
                e.append(blocks[k])
                lab += [IGN] * blocks[k].shape[0]
                k += 1
            else:
                e.append(embed(ids[r, t:t + 1]))
                lab.append(int(labels[r, t]))
        rows.append(torch.cat(e))
        rlabels.append(lab)
    n = max(x.shape[0] for x in rows)
    out = torch.zeros(len(rows), n, D)
    lab_out = torch.full((len(rows), n), IGN)
    m = torch.zeros(len(rows), n, dtype=torch.long)
    for i, (x, lab) in enumerate(zip(rows, rlabels)):
        sl = slice(n - x.shape[0], n) if side == "left" else slice(0, x.shape[0])
        out[i, sl] = x
        lab_out[i, sl] = torch.tensor(lab)
        m[i, sl] = 1
    return out, lab_out, m


def batch(side):
    # sample 0: two images (2 and 3 tokens, the second with an extra group), sample 1: text only, sample 2: one image
    rows = [[1, 5, IMG, 6, IMG, 7, 8], [1, 9, 10, 11], [1, IMG, 12]]
    n = max(map(len, rows))
    ids = torch.zeros(3, n, dtype=torch.long)
    mask = torch.zeros(3, n, dtype=torch.long)
    for i, r in enumerate(rows):
        sl = slice(n - len(r), n) if side == "left" else slice(0, len(r))
        ids[i, sl] = torch.tensor(r)
        mask[i, sl] = 1
    labels = torch.where(ids > 6, ids, torch.full_like(ids, IGN))
    blocks = [torch.full((2, D), 100.0), torch.full((3, D), 200.0), torch.full((4, D), 300.0)]
    return ids, mask, labels, blocks


@pytest.mark.parametrize("side", ["right", "left"])
def test_splice_matches_reference(side):
    ids, mask, labels, blocks = batch(side)
    sp = splice(ids, mask, labels, blocks, embed, padding_side=side)
    ref, ref_lab, ref_mask = reference(ids, mask, labels, blocks, side)
    assert torch.equal(sp.inputs_embeds, ref)
    assert torch.equal(sp.labels, ref_lab)
    assert torch.equal(sp.attention_mask, ref_mask)
    # no extra rows for the text-only sample
    assert sp.inputs_embeds.shape[0] == 3


def test_hand_checked_right_padded_layout():
    ids, mask, labels, blocks = batch("right")
    sp = splice(ids, mask, labels, blocks, embed, num_main=[2, 2, 4], padding_side="right")
    # row 0: [1,5,img(2),6,img(3),7,8] -> length 2+2+1+3+2 = 10
    assert sp.attention_mask[0].sum() == 10
    assert sp.inputs_embeds[0, :, 0].tolist() == [1, 5, 100, 100, 6, 200, 200, 200, 7, 8]
    assert sp.labels[0].tolist() == [IGN] * 8 + [7, 8]
    assert [(s.row, s.start, s.num_main, s.num_total) for s in sp.spans] == [(0, 2, 2, 2), (0, 5, 2, 3), (2, 1, 4, 4)]
    assert sp.position_ids[0, :10].tolist() == list(range(10))


def test_left_padding_positions_start_at_zero():
    ids, mask, labels, blocks = batch("left")
    sp = splice(ids, mask, labels, blocks, embed, padding_side="left")
    row = 1  # text-only row: 4 tokens at the end
    L = sp.inputs_embeds.shape[1]
    assert sp.attention_mask[row].tolist() == [0] * (L - 4) + [1] * 4
    assert sp.position_ids[row, -4:].tolist() == [0, 1, 2, 3]
    assert sp.spans[2].start == L - 5  # row 2: [1, img(4 tokens), 12] is right-aligned


def test_truncation_and_count_mismatch():
    ids, mask, labels, blocks = batch("right")
    sp = splice(ids, mask, labels, blocks, embed, max_length=6)
    assert sp.inputs_embeds.shape[1] == 6
    assert sp.attention_mask.sum(1).tolist() == [6, 4, 6]
    with pytest.raises(ValueError, match="3 image placeholders"):
        splice(ids, mask, labels, blocks[:2], embed)


def test_gradients_reach_visual_blocks():
    ids, mask, labels, blocks = batch("right")
    blocks = [b.clone().requires_grad_(True) for b in blocks]
    sp = splice(ids, mask, labels, blocks, embed)
    sp.inputs_embeds.sum().backward()
    assert all(torch.equal(b.grad, torch.ones_like(b)) for b in blocks)
