"""Multimodal sequence packing: a packed batch computes exactly what the padded batch computes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import vlmkit.model.packed_rows as packed_rows
from vlmkit.data.packing import collate_packed, plan_rows, spliced_length
from vlmkit.data.processing import MultimodalProcessor, collate
from vlmkit.data.templates import Turn
from vlmkit.model.assembly import build_model
from vlmkit.model.config import ModelConfig
from vlmkit.model.contracts import IGNORE_INDEX
from vlmkit.model.packed_rows import padding_fraction, segment_position_ids
from vlmkit.training.recipe import parse_recipe
from vlmkit.training.runner import run_recipe

MODEL = {
    "encoders": [{"name": "tiny-conv", "args": {"image_size": 32, "width": 32}}],
    "connector": "mlp2x_gelu",
    "llm": {"name": "tiny-llama", "args": {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "intermediate_size": 128}},
    "max_length": 128,
}


def build(attn: str = "sdpa"):
    cfg = json.loads(json.dumps(MODEL))
    cfg["llm"]["args"]["attn_implementation"] = attn
    torch.manual_seed(0)
    return build_model(ModelConfig.from_dict(cfg)).eval()


def samples(model):
    """Text-only, one-image and two-image samples of very different lengths."""
    rng = np.random.default_rng(0)

    def img():
        return Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))

    convs = [
        ([Turn("user", "<image>\nwhat shape is this"), Turn("assistant", "a red circle")], [img()]),
        ([Turn("user", "tell me a long story about " + "shapes and colours " * 6), Turn("assistant", "once " * 12)], []),
        ([Turn("user", "<image>\n<image>\ncompare them"), Turn("assistant", "same")], [img(), img()]),
        ([Turn("user", "hi"), Turn("assistant", "hello")], []),
        ([Turn("user", "<image>\ncolour?"), Turn("assistant", "blue")], [img()]),
    ]
    proc = MultimodalProcessor.for_model(model, template="vicuna_v1")
    return [proc(t, i) for t, i in convs]


def test_plan_rows_respects_the_budget_and_keeps_every_sample():
    lengths = [90, 10, 60, 30, 5, 128, 40]
    rows = plan_rows(lengths, 128)
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in r) <= 128 for r in rows)
    assert len(rows) == 3  # the minimum, ceil(363 / 128): 128 | 90+30+5 | 60+40+10
    assert rows == [[5], [0, 3, 4], [1, 2, 6]]  # samples keep their batch order within a row


def test_position_ids_restart_at_every_sample():
    seg = torch.tensor([[1, 1, 1, 2, 2, 3, 0, 0]])
    assert segment_position_ids(seg).tolist() == [[0, 1, 2, 0, 1, 0, 0, 1]]


@pytest.mark.parametrize("attn,flat", [("sdpa", False), ("eager", False), ("sdpa", True)])
def test_packed_logits_equal_unpacked_logits_per_sample(attn, flat, monkeypatch):
    if flat:  # the single-row layout used for flash-attention, checked here with sdpa
        monkeypatch.setattr(packed_rows, "FLAT_ONLY", (attn,))
    model = build(attn)
    feats = samples(model)
    views = list(model.views)
    lengths = [spliced_length(f, model.visual_tokens) for f in feats]
    batch = collate_packed(feats, lengths, 128, model.tokenizer.pad_token_id, views)
    rows = batch.pop("packed_rows")
    assert len(rows) < len(feats) and max(len(r) for r in rows) >= 2  # really packed
    with torch.no_grad():
        packed = model(**batch)
        start = 0
        for r, row in enumerate(rows):
            at = 0 if not flat else start
            for i in row:
                single = model(**collate([feats[i]], model.tokenizer.pad_token_id, "right", views))
                n = single.logits.shape[1]
                assert n == lengths[i]
                got = packed.logits[0 if flat else r, at:at + n]
                torch.testing.assert_close(got, single.logits[0], rtol=0, atol=1e-5)
                at += n
            start = at


def test_packed_loss_and_gradients_equal_padded_batch():
    model = build()
    feats = samples(model)
    views = list(model.views)
    lengths = [spliced_length(f, model.visual_tokens) for f in feats]
    padded = collate(feats, model.tokenizer.pad_token_id, "right", views)
    packed = collate_packed(feats, lengths, 128, model.tokenizer.pad_token_id, views)
    packed.pop("packed_rows")
    params = [p for p in model.parameters() if p.requires_grad]

    def loss_and_grads(batch):
        model.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in params]

    loss_a, grads_a = loss_and_grads(padded)
    loss_b, grads_b = loss_and_grads(packed)
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-6, atol=1e-6)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
    # same supervised tokens: the first label of each packed sample was never a target anyway
    assert int((packed["labels"][:, 1:] != IGNORE_INDEX).sum()) == int((padded["labels"][:, 1:] != IGNORE_INDEX).sum())
    # and packing computes on less padding
    pad_packed = padding_fraction(model(**packed).attention_mask.bool())
    pad_padded = padding_fraction(model(**padded).attention_mask.bool())
    assert pad_packed < 0.5 * pad_padded, (pad_packed, pad_padded)


def test_packing_stage_trains_like_the_padded_stage_and_logs_padding(tmp_path):
    from vlmkit_data.synthetic import generate_shapes

    shapes = generate_shapes(tmp_path / "shapes", n_train=24, n_test=4, seed=1, image_size=32)

    def run(out, **kw):
        stage = {"name": "s1", "data": {"dataset": "llava-json", "args": {"path": shapes["train"], "image_root": shapes["root"]},
                                        "template": "vicuna_v1"},
                 "trainable": ["connector", "llm"], "lr": 3e-3, "max_steps": 3, "batch_size": 6, "logging_steps": 1,
                 "save_steps": 100, "warmup_ratio": 0.0, **kw}
        final = run_recipe(parse_recipe({"model": MODEL, "output_dir": str(out), "seed": 3, "stages": [stage]}))
        return [h for h in json.loads((final / "log_history.json").read_text()) if "loss" in h]

    padded = run(tmp_path / "padded")
    packed = run(tmp_path / "packed", packing=True, pack_max_tokens=128)
    assert [round(h["loss"], 4) for h in packed] == [round(h["loss"], 4) for h in padded]
    assert all(0.0 <= h["pad_fraction"] < 1.0 for h in packed + padded)
