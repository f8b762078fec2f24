"""The ``mg-llava`` preset: CLIP-L/336 + ConvNeXt-L/768, roi + convgate, mlp2x_gelu, Vicuna-7B shape.
Built on the meta device only; parameter counts from components.md 2.3/2.4."""

from __future__ import annotations

import copy

import pytest
import torch

from vlmkit.errors import UnknownComponentError
from vlmkit.model.assembly import build_model
from vlmkit.model.config import ModelConfig
from vlmkit.model.contracts import ImageView, VisionEncoder
from vlmkit.plugins.registry import registry


def preset() -> dict:
    return copy.deepcopy(registry.load("preset", "mg-llava"))


def _parts(model):
    return {p["part"]: p for p in model.summary()["parts"]}


def _check_mg_llava(model):
    parts = _parts(model)
    names = {k: v["component"] for k, v in parts.items()}
    assert names["fusion.0"] == "roi" and names["fusion.1"] == "convgate"
    assert parts["fusion.1"]["parameters"] == 6_085_121
    assert parts["fusion.0"]["parameters"] == 28_581_888  # bbox projector 2880 -> 4096 -> 4096
    assert parts["connector"]["parameters"] == 1024 * 4096 + 4096 + 4096 * 4096 + 4096
    assert model.needs_boxes and model.visual_tokens_per_image() == 576
    assert {k: v.size for k, v in model.views.items()} == {"base": 336, "hires": 768}
    assert model.llm.hidden_size == 4096


def test_preset_contents():
    cfg = ModelConfig.from_dict(preset())
    # other packages' components are named with their distribution (a reused name changes nothing)
    assert [e.name for e in cfg.encoders] == ["vlmkit-encoders:clip", "vlmkit-encoders:convnext"]
    assert cfg.encoders[0].args["view"] == "base" and cfg.encoders[1].args["view"] == "hires"
    # its own package's names stay bare (they resolve in its favour when loaded as a preset)
    assert [f.name for f in cfg.fusion] == ["roi", "convgate"] and cfg.connector.name == "mlp2x_gelu"


def test_mg_llava_preset_on_meta():
    try:
        registry.load("encoder", "convnext")
    except UnknownComponentError:
        pytest.skip("convnext encoder not installed")
    model = build_model(ModelConfig.from_dict(preset()), meta=True)
    _check_mg_llava(model)
    hires = model.encoders[1].spec()
    assert [m[:2] for m in hires.maps][:4] == [("stage0", 192), ("stage1", 384), ("stage2", 768), ("stage3", 1536)]


class ConvNeXtLShape(VisionEncoder):
    """Stand-in with ConvNeXt-L's declared shapes at 768 px (no compute), to check the preset's wiring."""

    def __init__(self, image_size: int = 768, view: str = "hires"):
        super().__init__()
        self.view = ImageView(view, image_size)
        self.output_dim = 1536
        self.stem = torch.nn.Conv2d(3, 192, 4, 4)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        return height // 32, width // 32

    def feature_maps(self):
        return (("stage0", 192, 4), ("stage1", 384, 8), ("stage2", 768, 16), ("stage3", 1536, 32))

    def forward(self, pixel_values):  # pragma: no cover - never run (meta only)
        raise NotImplementedError


def test_mg_llava_wiring_with_convnext_l_shapes():
    registry.register("encoder", "test-convnext-l-shape", ConvNeXtLShape)
    try:
        cfg = preset()
        cfg["encoders"][1] = {"name": "test-convnext-l-shape", "args": {"view": "hires"}}
        model = build_model(ModelConfig.from_dict(cfg), meta=True)
    finally:
        registry.unregister("encoder", "test-convnext-l-shape")
    _check_mg_llava(model)
    roi, gate = model.connectors[0], model.connectors[1]
    assert roi.view_name == "hires" and roi.in_channels == 2880 and roi.output_size == 56
    assert (gate.high_stream, gate.high_map, gate.high_dim, gate.low_dim) == (1, "stage3", 1536, 1024)


def _needs_convnext():
    try:
        registry.load("encoder", "convnext")
    except UnknownComponentError:
        pytest.skip("convnext encoder not installed")


def test_convnext5_with_convgate_fuses_stage3_into_the_stage4_grid():
    _needs_convnext()
    cfg = ModelConfig.from_dict({"encoders": ["convnext5"], "fusion": ["convgate"], "connector": "mlp2x_gelu",
                                 "llm": preset()["llm"]})
    model = build_model(cfg, meta=True)
    gate = model.connectors[0]
    assert (gate.high_stream, gate.high_map, gate.low_dim, gate.high_dim) == (0, "stage3", 3072, 1536)
    lo, hi = 3072, 1536
    expected = (hi * hi + hi) + (hi * lo + lo) + (lo * 49 + lo) + (lo * lo + lo) + (2 * lo * 512 + 512) + 513
    assert _parts(model)["fusion.0"]["parameters"] == expected
    assert model.visual_tokens_per_image() == 144  # 768 px / 64


def test_tiny_mg_llava_with_real_encoders_forward():
    _needs_convnext()
    from PIL import Image

    from vlmkit.data.processing import MultimodalProcessor, collate
    from vlmkit.data.templates import Turn

    torch.manual_seed(0)
    cfg = ModelConfig.from_dict({
        "encoders": [{"name": "clip", "args": {"config": "tiny", "view": "base"}},
                     {"name": "convnext", "args": {"config": "tiny", "image_size": 128, "view": "hires"}}],
        "fusion": [{"name": "roi", "args": {"output_size": 7}}, "convgate"],
        "connector": "mlp2x_gelu", "llm": {"name": "tiny-llama", "args": {"hidden_size": 64}}, "max_length": 256})
    model = build_model(cfg).eval()
    assert model.connectors[0].in_channels == 16 + 32 + 48 + 64 and model.connectors[1].high_map is None
    proc = MultimodalProcessor.for_model(model)
    img = Image.new("RGB", (90, 60), (120, 10, 200))
    f1 = proc([Turn("user", "<image>\nWhat?"), Turn("assistant", "purple")], [img], boxes=[[[0, 0, 45, 30],
                                                                                              [40, 20, 90, 60]]])
    f2 = proc([Turn("user", "Hi"), Turn("assistant", "hello")], [])
    batch = collate([f1, f2], model.tokenizer.pad_token_id, views=list(model.views))
    with torch.no_grad():
        out = model(**batch)
        blocks, _, _ = model.encode_images(batch["pixel_values"], batch["boxes"])
        clip_tokens = model.encoders[0](batch["pixel_values"]["base"]).tokens
    assert [(s.num_main, s.num_total) for s in out.image_spans] == [(16, 18)]
    # Conv-Gate is the identity at init: the main tokens are the projected CLIP tokens
    assert torch.allclose(blocks[0][:16], model.connectors[2].proj(clip_tokens[0]), atol=1e-5)
