"""A few optimizer steps of a tiny model with Conv-Gate (and RoI) fusion reduce the loss on a fixed batch.

Encoders are frozen (as in MG-LLaVA); fusion, projector and LLM train. Gradients must reach the
fusion: its zero-initialised output convs get non-zero gradients on the first step and move.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vlmkit.data.processing import MultimodalProcessor, collate
from vlmkit.data.templates import Turn
from vlmkit.model.assembly import build_model
from vlmkit.model.config import ModelConfig

LLM = {"name": "tiny-llama", "args": {"hidden_size": 64}}
VARIANTS = {
    # two tiny encoders reading two views: low 4x4 grid (64 px) + high 8x8 grid (128 px), pooled 2x2
    "two-encoders": {"encoders": [{"name": "tiny-conv", "args": {"width": 32}},
                                  {"name": "tiny-conv", "args": {"width": 48, "image_size": 128, "view": "hires"}}],
                     "fusion": ["convgate"]},
    # one hierarchical encoder: tokens (stride 16) fused with its own stage1 map (stride 8)
    "single-encoder": {"encoders": [{"name": "tiny-conv", "args": {"width": 32}}], "fusion": ["convgate"]},
    # MG-LLaVA shaped: object tokens from the high-res encoder's maps, then Conv-Gate
    "roi+convgate": {"encoders": [{"name": "tiny-conv", "args": {"width": 32}},
                                  {"name": "tiny-conv", "args": {"width": 48, "image_size": 128, "view": "hires"}}],
                     "fusion": [{"name": "roi", "args": {"stream": 1, "output_size": 7}}, "convgate"]},
}
COLOURS = {"red": (220, 20, 20), "green": (20, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 20)}


def _batch(model):
    proc = MultimodalProcessor.for_model(model)
    feats = []
    for i, (name, rgb) in enumerate(COLOURS.items()):
        img = Image.new("RGB", (72, 56), (255, 255, 255))
        img.paste(Image.new("RGB", (30, 20), rgb), (10 + 8 * i, 12))
        feats.append(proc([Turn("user", "<image>\nWhat colour is the box?"), Turn("assistant", name)], [img],
                          boxes=[[[10 + 8 * i, 12, 40 + 8 * i, 32]]]))
    feats.append(proc([Turn("user", "Say hi"), Turn("assistant", "hi")], []))  # a text-only row
    return collate(feats, model.tokenizer.pad_token_id, views=list(model.views))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_few_steps_reduce_the_loss(variant):
    torch.manual_seed(0)
    model = build_model(ModelConfig.from_dict({**VARIANTS[variant], "connector": "mlp2x_gelu", "llm": LLM,
                                               "max_length": 256}))
    for enc in model.encoders:
        enc.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.train()
    batch = _batch(model)
    convgate = next(c for c in model.connectors if c.component_name == "convgate")
    opt = torch.optim.AdamW(trainable, lr=3e-3, weight_decay=0.0)
    losses = []
    for step in range(5):
        out = model(**batch)
        opt.zero_grad()
        out.loss.backward()
        if step == 0:
            assert convgate.slow_proj.weight.grad.abs().sum() > 0 and convgate.fast_proj.weight.grad.abs().sum() > 0
        opt.step()
        losses.append(out.loss.item())
    with torch.no_grad():
        final = model(**batch).loss.item()
    assert final < 0.8 * losses[0], losses
    assert convgate.slow_proj.weight.abs().sum() > 0 and convgate.fast_proj.weight.abs().sum() > 0
    if variant == "roi+convgate":
        assert all(s.num_total == s.num_main + 1 for s in out.image_spans)
