"""Paper presets build on the meta device with the parameter counts of components.md §6.1."""

from __future__ import annotations

import torch

from vlmkit.model.assembly import build_model
from vlmkit.model.config import ModelConfig
from vlmkit.model.selectors import select_parameters
from vlmkit.plugins.registry import registry


def preset_model(name: str):
    return build_model(ModelConfig.from_dict(registry.load("preset", name), where=f"preset '{name}'"), meta=True)


def parts(model) -> dict[str, int]:
    return {p["part"]: p["parameters"] for p in model.summary()["parts"]}


def count(model, selectors) -> int:
    chosen = select_parameters(model, selectors)
    return sum(p.numel() for n, p in model.named_parameters() if n in chosen)


def test_convllava_1536():
    model = preset_model("convllava-1536")
    p = parts(model)
    assert p["connector"] == 29_368_320  # Linear(3072, 4096) -> GELU -> Linear(4096, 4096)
    assert count(model, ["encoder.convnext5:stage5"]) == 472_934_400
    assert p["encoder.0"] == 196_227_264 + 472_934_400  # ConvNeXt-L trunk + stage 5
    assert model.visual_tokens_per_image() == 576 and model.views["base"].size == 1536
    feats = model.encoders[0](torch.empty(1, 3, 1536, 1536, device="meta"))
    assert tuple(feats.tokens.shape) == (1, 576, 3072)
    assert model.llm.hidden_size == 4096 and p["llm"] == 6_738_415_616  # Vicuna-7B shape
    # ConvLLaVA stage 2 trains stages 2..4 of the tower (0-based), stem and stages 0-1 stay frozen
    stage2 = select_parameters(model, ["encoder.convnext5:stages>=2"])
    assert stage2 and all(".stages.2." in n or ".stages.3." in n or ".stages.4." in n for n in stage2)


def test_llava_15_s2():
    model = preset_model("llava-1.5-s2")
    p = parts(model)
    assert p["connector"] == 29_368_320
    assert p["encoder.0"] == 303_507_456  # one CLIP-L/14-336, run on 14 tiles
    assert model.visual_tokens_per_image() == 576 and model.views["base"].size == 1008
    assert count(model, ["encoder.s2:layers>=12"]) == 151_154_688  # DenseFusion stage 2: CLIP layers 12-23


def test_vip_llava():
    model = preset_model("vip-llava")
    p = parts(model)
    assert p["connector"] == 37_767_168  # LayerNorm(5120) + Linear(5120, 4096) + GELU + Linear(4096, 4096)
    assert model.encoders[0].output_dim == 5120 and model.visual_tokens_per_image() == 576


def test_llava_15_projector():
    assert parts(preset_model("llava-1.5"))["connector"] == 20_979_712  # mlp2x_gelu 1024 -> 4096
