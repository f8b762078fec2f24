"""AnyRes tiling: the arithmetic against transformers', the released models' token counts, build-time
errors, hostile images, and every grid encoder composed with tiling.

transformers' LLaVA-NeXT and OneVision code is the reference for the arithmetic (pinpoint choice, unpadding,
OneVision's cap): the counts are compared on 400 random image sizes with the released configs (LLaVA-1.6:
CLIP-336 tiles on 5 pinpoints; OneVision: SigLIP-384 tiles on (1x1)..(6x6), anyres_max_9).
"""

from __future__ import annotations

import random
import types

import pytest
import torch
from PIL import Image
from transformers import LlavaNextProcessor, LlavaOnevisionProcessor
from transformers.image_processing_utils import select_best_resolution
from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape, unpad_image

from vlmkit.data.processing import MultimodalProcessor, collate
from vlmkit.data.templates import Turn
from vlmkit.errors import ConfigError, IncompatibleComponentsError
from vlmkit.model.assembly import build_model
from vlmkit.model.config import ComponentConfig, ModelConfig
from vlmkit.model.tiling import Tiling, best_resolution, grid_shape, unpadded_grid
from vlmkit.plugins.presets import load_preset
from vlmkit.plugins.registry import registry

NEXT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
OV_PINPOINTS = [[h * 384, w * 384] for h in range(1, 7) for w in range(1, 7)]
TINY_LLM = ComponentConfig("tiny-llama", {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64})


def random_sizes(n: int = 400, seed: int = 0) -> list[tuple[int, int]]:
    """(height, width) from 1 px to 5,000 px, aspect ratios from 1:50 to 50:1."""
    rng = random.Random(seed)
    out = [(1, 1), (336, 336), (10, 1000), (1000, 10), (5000, 100)]
    while len(out) < n:
        out.append((rng.randint(1, 5000), rng.randint(1, 5000)))
    return out


def test_pinpoint_choice_and_grid_are_transformers():
    for size in random_sizes():
        for pins in (NEXT_PINPOINTS, OV_PINPOINTS):
            assert best_resolution(size, pins) == tuple(select_best_resolution(size, pins))
            tile = pins[0][0] if pins is OV_PINPOINTS else 336
            assert grid_shape(size, pins, tile) == tuple(get_anyres_image_grid_shape(size, pins, tile))


def test_unpadding_is_transformers():
    for h, w in random_sizes(200, seed=1):
        for grid in ((24, 48), (48, 24), (48, 48), (72, 24), (27, 162)):
            uh, uw, top, left = unpadded_grid(grid, (h, w))
            ref = unpad_image(torch.zeros(1, *grid), (h, w))
            assert (uh, uw) == tuple(ref.shape[1:])
            marked = torch.arange(grid[0] * grid[1], dtype=torch.float).reshape(1, *grid)
            assert torch.equal(marked[:, top:top + uh, left:left + uw], unpad_image(marked, (h, w)))


def _hf_counter(cls, **fields):
    """transformers' processor token count, called on a stand-in with only the fields it reads."""
    ns = types.SimpleNamespace(**fields)
    ns._get_unpadded_features = lambda *a: cls._get_unpadded_features(ns, *a)
    return lambda h, w, tile: cls._get_number_of_features(ns, h, w, tile, tile)


@pytest.mark.parametrize("preset", ["llava-next-7b", "llava-onevision-0.5b"])
def test_meta_counts_match_the_released_models(preset):
    """``vlmkit build --preset P --meta --image-size WxH`` gives the count transformers' processor of the release
    inserts (LLaVA-1.6: strategy 'default' drops CLS, so no extra token; OneVision: 729 per crop, capped)."""
    model = build_model(ModelConfig.from_dict(load_preset("preset", preset)), meta=True)
    if preset == "llava-next-7b":
        count = _hf_counter(LlavaNextProcessor, image_processor=types.SimpleNamespace(image_grid_pinpoints=NEXT_PINPOINTS),
                            patch_size=14, num_additional_image_tokens=0)
        tile = 336
    else:
        count = _hf_counter(LlavaOnevisionProcessor,
                            image_processor=types.SimpleNamespace(image_grid_pinpoints=OV_PINPOINTS),
                            num_image_tokens=729, vision_aspect_ratio="anyres_max_9")
        tile = 384
    assert model.tiling.pinpoints == tuple(tuple(p) for p in (NEXT_PINPOINTS if tile == 336 else OV_PINPOINTS))
    for h, w in random_sizes():
        assert model.visual_tokens_for_image(h, w) == count(h, w, tile), (h, w)
    if preset == "llava-next-7b":  # the largest LLaVA-1.6 image: 576 base + 48 x (48 + 1)
        assert model.visual_tokens_for_image(672, 672) == 2928


def test_onevision_does_not_tile_the_images_of_a_multi_image_sample():
    model = build_model(ModelConfig.from_dict(load_preset("preset", "llava-onevision-0.5b")), meta=True)
    assert model.visual_tokens_for_image(768, 1152, images_in_sample=2) == 729 + 1  # base crop + one newline
    assert model.visual_tokens_for_image(768, 1152) > 2000


def test_config_round_trips_and_the_range_form():
    t = Tiling.from_dict({"pinpoints": "(1x1),...,(2x3)", "anyres_max": 4})
    assert t.resolved(10).pinpoints == ((10, 10), (10, 20), (10, 30), (20, 10), (20, 20), (20, 30))
    assert Tiling.from_dict(t.to_dict()) == t
    cfg = ModelConfig.from_dict({"encoders": ["tiny-conv"], "connector": "mlp2x_gelu", "tiling": t.to_dict()})
    assert ModelConfig.from_dict(cfg.to_dict()).tiling == t
    cfg.set("tiling.merge=flat")
    assert cfg.tiling.merge == "flat" and cfg.tiling.anyres_max == 4


@pytest.mark.parametrize("bad, match", [
    ({"pinpoints": []}, "non-empty list"),
    ({"pinpoints": [[336, 0]]}, r"pinpoints\[0\]"),
    ({"pinpoints": "(2x2),...,(1x1)"}, "empty range"),
    ({"pinpoints": "1x1..3x3"}, "not a range"),
    ({"pinpoints": [[336, 336]], "merge": "spatial_pad"}, "merge"),
    ({"pinpoints": [[336, 336]], "anyres_max": 0}, "anyres_max"),
    ({"pinpoints": [[336, 336]], "tile_multi_images": "no"}, "tile_multi_images"),
    ({"pinpoints": [[336, 336]], "grid": 3}, "unknown key 'grid'"),
])
def test_bad_tiling_configs_name_the_field(bad, match):
    with pytest.raises(ConfigError, match=match):
        Tiling.from_dict(bad)


def test_pinpoints_that_do_not_divide_the_encoder_input_are_refused_at_build():
    cfg = ModelConfig.from_dict({"encoders": ["tiny-conv"], "connector": "mlp2x_gelu",
                                 "tiling": {"pinpoints": [[64, 128], [100, 64]]}})
    with pytest.raises(ConfigError, match=r"\[100, 64\] is not a multiple of the encoder's input size 64 px"):
        build_model(cfg, meta=True)


def test_what_cannot_be_tiled_is_refused_at_build():
    tiling = {"pinpoints": "(1x1),...,(2x2)"}
    native = ModelConfig.from_dict({"encoders": [{"name": "tiny-conv", "args": {"resize": "native"}}],
                                    "connector": "mlp2x_gelu", "tiling": tiling})
    with pytest.raises(IncompatibleComponentsError, match="resize: native"):
        build_model(native, meta=True)
    roi = ModelConfig.from_dict(load_preset("preset", "mg-llava"))
    roi.tiling = Tiling.from_dict(tiling)
    with pytest.raises(IncompatibleComponentsError, match="connector 'roi'.*boxes"):
        build_model(roi, meta=True)
    no_grid = ModelConfig.from_dict({"encoders": [{"name": "clip", "args": {"config": "tiny", "select": "cls_patch"}}],
                                     "connector": "mlp2x_gelu", "tiling": tiling})
    with pytest.raises(IncompatibleComponentsError, match="token grid"):
        build_model(no_grid, meta=True)
    no_grid.tiling = Tiling.from_dict({**tiling, "merge": "flat"})  # flat needs no grid
    build_model(no_grid, meta=True)
    ross = ModelConfig.from_dict(load_preset("preset", "ross-tiny"))
    ross.tiling = Tiling.from_dict(tiling)
    with pytest.raises(IncompatibleComponentsError, match="objective 'ross'.*AnyRes"):
        build_model(ross, meta=True)


# -- hostile images -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiled_tiny():
    cfg = ModelConfig.from_dict({"encoders": ["tiny-conv"], "connector": "mlp2x_gelu", "llm": TINY_LLM.to_dict(),
                                 "template": "plain", "tiling": {"pinpoints": "(1x1),...,(3x3)", "anyres_max": 4}})
    torch.manual_seed(0)
    return build_model(cfg).eval()


@pytest.mark.parametrize("size", [(3, 5), (1, 1), (1000, 50), (50, 1000), (64, 1280)])
def test_tiny_and_extreme_images_give_tokens_that_match_their_count(tiled_tiny, size):
    """Smaller than a tile, one pixel, 1:20 and 20:1: every image keeps its whole base crop, and the forward gives
    exactly the counted number of tokens. (With this model's 4 x 4 tokens per tile, unpadding a 1:20 image leaves
    int(round(50 * 12 / 1000)) = 0 tile rows, as transformers' LLaVA-NeXT does; the released models keep rows,
    see the next test.)"""
    w, h = size
    proc = MultimodalProcessor.for_model(tiled_tiny)
    feats = proc([Turn("user", "<image>"), Turn("assistant", "a")], [Image.new("RGB", (w, h), (200, 10, 10))])
    sizes, extra = feats.visual_sizes(0)
    counted = tiled_tiny.visual_tokens(sizes, **extra)
    assert counted == tiled_tiny.visual_tokens_for_image(h, w)
    with torch.no_grad():
        out = tiled_tiny(**collate([feats], 0))
    assert out.image_spans[0].num_total == counted
    assert counted >= 16  # never less than the base crop
    assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize("preset, base", [("llava-next-7b", 576), ("llava-onevision-0.5b", 729)])
def test_released_layouts_keep_tile_rows_at_1_to_20(preset, base):
    model = build_model(ModelConfig.from_dict(load_preset("preset", preset)), meta=True)
    for h, w in ((100, 2000), (2000, 100), (20, 400)):
        assert model.visual_tokens_for_image(h, w) > base + 2 * 24, (h, w)


def test_a_10000_pixel_square_is_tiled_not_refused(tiled_tiny):
    """100 megapixels is over PIL's decompression-bomb warning (89.5 MP) and under its error (179 MP): decoded
    files above the error limit are refused by ``decode_image`` with the file named (tests/test_faults_data.py);
    an image that decodes is tiled to the largest pinpoint, never shrunk to nothing."""
    img = Image.new("RGB", (10_000, 10_000), (10, 200, 10))
    proc = MultimodalProcessor.for_model(tiled_tiny)
    feats = proc([Turn("user", "<image>"), Turn("assistant", "a")], [img])
    assert feats.pixel_values["base"][0].shape == (10, 3, 64, 64)  # base + 3 x 3 tiles
    assert feats.image_sizes == [(10_000, 10_000)]


def test_pixel_values_and_sizes_that_do_not_belong_together_are_named(tiled_tiny):
    proc = MultimodalProcessor.for_model(tiled_tiny)
    feats = proc([Turn("user", "<image>"), Turn("assistant", "a")], [Image.new("RGB", (200, 60))])
    batch = collate([feats], 0)
    batch["image_sizes"] = torch.tensor([[60, 60]])  # a square: 1 x 1 tiles, but the pixels hold 3 tiles
    with pytest.raises(ValueError, match="pixel values and image_sizes do not belong together"):
        tiled_tiny(**batch)
    del batch["image_sizes"]
    with pytest.raises(ValueError, match="needs image_sizes"):
        tiled_tiny(**batch)


# -- AnyRes composes with every grid encoder ------------------------------------------------------
def _tiny_args(name: str) -> dict:
    cls = registry.load("encoder", name)
    if getattr(cls, "tiny_args", None) is not None:
        return dict(cls.tiny_args)
    import inspect

    return {"config": "tiny"} if "config" in inspect.signature(cls).parameters else {}


ENCODERS = sorted(e.name for e in registry.entries("encoder") if e.static_status() == "ok")


@pytest.mark.parametrize("encoder", ENCODERS)
def test_tiling_composes_with_every_grid_encoder(encoder):
    """Each encoder with tiling (tiles in its own view's size) trains a step on a wide and a tall image, or is
    refused at build naming the tiling and the part that cannot be tiled."""
    cfg = ModelConfig(encoders=[ComponentConfig(encoder, _tiny_args(encoder))], connector=ComponentConfig("mlp2x_gelu"),
                      llm=TINY_LLM, template="plain", tiling=Tiling.from_dict({"pinpoints": "(1x1),...,(2x2)"}))
    torch.manual_seed(0)
    try:
        model = build_model(cfg)
    except IncompatibleComponentsError as exc:
        assert "model.tiling" in str(exc)
        pytest.skip(f"refused at build, as it should be: {exc}")
    proc = MultimodalProcessor.for_model(model)
    imgs = [Image.new("RGB", (300, 120), (250, 0, 0)), Image.new("RGB", (90, 200), (0, 0, 250))]
    feats = [proc([Turn("user", "<image>"), Turn("assistant", "red")], [im]) for im in imgs]
    out = model(**collate(feats, 0))
    assert [s.num_total for s in out.image_spans] == [model.visual_tokens(*f.visual_sizes(0)[:1], **f.visual_sizes(0)[1])
                                                     for f in feats]
    assert out.image_spans[0].num_total != out.image_spans[1].num_total  # the count depends on the image
    out.loss.backward()
    assert model.tile_merge.image_newline.grad is not None
    assert all(p.grad is not None for p in model.connectors.parameters())


def test_convgate_with_tiling_every_tile_seen_by_both_towers():
    """The seed combination: Conv-Gate fuses a high-resolution ConvNeXt into CLIP, per tile."""
    cfg = ModelConfig.from_dict({
        "encoders": [{"name": "clip", "args": {"config": "tiny"}},
                     {"name": "convnext5", "args": {"config": "tiny", "view": "hires"}}],
        "fusion": ["convgate"], "connector": "mlp2x_gelu", "llm": TINY_LLM.to_dict(), "template": "plain",
        "tiling": {"pinpoints": "(1x1),...,(2x3)"}})
    model = build_model(cfg)
    proc = MultimodalProcessor.for_model(model)
    feats = proc([Turn("user", "<image>"), Turn("assistant", "red")], [Image.new("RGB", (300, 100))])
    base, hires = feats.pixel_values["base"][0], feats.pixel_values["hires"][0]
    assert base.shape[0] == hires.shape[0] == 4  # the same 1 x 3 grid in both views, each at its size
    assert base.shape[-1] == 56 and hires.shape[-1] == 128
    out = model(**collate([feats], 0))
    out.loss.backward()
    assert torch.isfinite(out.loss)


def test_the_convgate_anyres_preset_builds():
    model = build_model(ModelConfig.from_dict(load_preset("preset", "convgate-anyres")), meta=True)
    next_7b = build_model(ModelConfig.from_dict(load_preset("preset", "llava-next-7b")), meta=True)
    for h, w in random_sizes(50):  # the CLIP grid decides the layout, as in LLaVA-1.6
        assert model.visual_tokens_for_image(h, w) == next_7b.visual_tokens_for_image(h, w)
    assert model.views["hires"].size == 768


def test_build_reports_tokens_per_image_size_and_refuses_bad_sizes():
    import json as _json

    from typer.testing import CliRunner

    from vlmkit_cli.main import app

    runner = CliRunner()
    res = runner.invoke(app, ["build", "--preset", "llava-next-7b", "--meta", "--json", "--image-size", "1344x672",
                              "--image-size", "672x672"])
    assert res.exit_code == 0, res.output
    summary = _json.loads(res.output)
    assert summary["visual_tokens_for"] == {"1344x672": 1752, "672x672": 2928}
    assert summary["tiling"]["merge"] == "spatial_unpad"
    # --tiling replaces the pinpoints and keeps the preset's other fields
    res = runner.invoke(app, ["build", "--preset", "llava-onevision-0.5b", "--meta", "--json",
                              "--tiling", "(1x1),...,(2x2)", "--image-size", "768x768"])
    assert res.exit_code == 0, res.output
    summary = _json.loads(res.output)
    assert summary["tiling"]["anyres_max"] == 9 and len(summary["tiling"]["pinpoints"]) == 4
    res = runner.invoke(app, ["build", "--preset", "llava-onevision-0.5b", "--meta", "--json", "--image-size",
                              "1344x672"])
    assert _json.loads(res.output)["visual_tokens_for"] == {"1344x672": 6615}  # the README's capped count
    res = runner.invoke(app, ["build", "--preset", "tiny", "--meta", "--image-size", "12x"])
    assert res.exit_code != 0 and "--image-size '12x': expected WIDTHxHEIGHT" in res.output
    res = runner.invoke(app, ["build", "--preset", "tiny", "--meta", "--tiling", "64x100"])
    assert res.exit_code != 0 and "not a multiple of the encoder's input size 64 px" in res.output


def test_transformers_and_the_llava_code_unpad_differently_on_one_size_in_twenty_thousand():
    """The README's and tiling.py's '1 of 20,000': random sizes from 50 to 3,000 px on LLaVA-1.6's pinpoints
    (24 x 24 tokens per tile), round (transformers) vs floor (the LLaVA code)."""
    rng = random.Random(0)
    pins = [tuple(p) for p in NEXT_PINPOINTS]
    differ = []
    for _ in range(20_000):
        h, w = rng.randint(50, 3000), rng.randint(50, 3000)
        rows, cols = grid_shape((h, w), pins, 336)
        grid = (rows * 24, cols * 24)
        if unpadded_grid(grid, (h, w), "round")[:2] != unpadded_grid(grid, (h, w), "floor")[:2]:
            differ.append((w, h))
    assert differ == [(656, 1722)]
