"""RoI object tokens (MG-LLaVA align_box + bbox_projector): pooling values, box mapping, edge cases,
and where the tokens land in a full model forward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.ops import roi_align

from vlmkit.data.processing import MultimodalProcessor, collate
from vlmkit.data.templates import Turn
from vlmkit.errors import ConfigError, Incompatible, IncompatibleComponentsError
from vlmkit.model.assembly import build_model
from vlmkit.model.config import ModelConfig
from vlmkit.model.contracts import IGNORE_INDEX, ImageView, StreamSpec, VisualContext, VisualFeatures
from vlmkit_fusion.roi import RoIObjectTokens, clamp_boxes, multi_level_map, roi_mean

CONVNEXT_MAPS = (("stage0", 192, 4), ("stage1", 384, 8), ("stage2", 768, 16), ("stage3", 1536, 32))


def two_level_spec(view_size=96):
    return StreamSpec("enc", 8, 9, (3, 3), ImageView("hires", view_size), (("fine", 3, 4), ("coarse", 2, 8)))


def test_parameter_count_convnext_l_to_4096():
    clip = StreamSpec("clip", 1024, 576, (24, 24), ImageView("base", 336))
    convnext = StreamSpec("convnext", 1536, 576, (24, 24), ImageView("hires", 768), CONVNEXT_MAPS)
    with torch.device("meta"):
        roi = RoIObjectTokens([clip, convnext], 4096)
    assert roi.in_channels == 2880 and roi.view_name == "hires" and roi.stream_index == 1
    assert sum(p.numel() for p in roi.parameters()) == 28_581_888
    assert roi.output_specs() == [clip, convnext]  # streams pass through
    assert RoIObjectTokens.needs_boxes is True


def _region_maps():
    fine = torch.zeros(2, 3, 24, 24)
    fine[0, :, 8:16, 4:20] = 5.0
    coarse = torch.zeros(2, 2, 12, 12)
    coarse[0, :, 4:8, 2:10] = 7.0
    return {"fine": fine, "coarse": coarse}


@pytest.mark.parametrize("view_size", [96, 192])
def test_box_over_a_constant_region_pools_to_that_value(view_size):
    # interior of the region in fine-map cells: rows 9..14, cols 5..18 are 5 (fine) and 7 (upsampled
    # coarse); a box on exactly that interior, given in view pixels, must pool to [5,5,5,7,7]
    torch.manual_seed(0)
    roi = RoIObjectTokens([two_level_spec(view_size)], 16)
    k = view_size / 24  # view pixels per fine cell: spatial_scale comes from the view size
    box = torch.tensor([[5 * k, 9 * k, 18 * k, 14 * k]])
    far = torch.tensor([[0.0, 0.0, 2 * k, 2 * k]])
    ctx = VisualContext({"hires": (view_size, view_size)}, boxes={"hires": [box, far]})
    feats = VisualFeatures(torch.randn(2, 9, 8), (3, 3), _region_maps())
    pooled, counts = roi.object_features(feats, ctx)
    assert counts == [1, 1]
    assert torch.allclose(pooled[0], torch.tensor([5.0, 5, 5, 7, 7]), atol=1e-5)
    assert torch.allclose(pooled[1], torch.zeros(5), atol=1e-6)
    out = roi([feats], ctx)
    assert out[0] is feats
    group = ctx.extra_groups[0]
    assert [g.shape for g in group] == [(1, 16), (1, 16)]
    assert torch.allclose(group[0][0], roi.projector(torch.tensor([5.0, 5, 5, 7, 7])), atol=1e-5)


def test_pooling_matches_torchvision_reference():
    torch.manual_seed(1)
    maps = [torch.randn(2, 3, 16, 16), torch.randn(2, 4, 8, 8), torch.randn(2, 5, 4, 4)]
    multi = multi_level_map(maps)
    ref = torch.cat([maps[0]] + [F.interpolate(m, size=(16, 16), mode="bilinear", align_corners=False)
                                 for m in maps[1:]], 1)
    assert torch.equal(multi, ref) and multi.shape == (2, 12, 16, 16)
    boxes = [torch.tensor([[3.0, 5.0, 40.0, 33.0], [0.0, 0.0, 64.0, 64.0]]), torch.tensor([[10.0, 12.5, 20.0, 50.0]])]
    got = roi_mean(multi, boxes, 56, (0.25, 0.25))
    want = roi_align(ref, boxes, output_size=56, spatial_scale=0.25, sampling_ratio=-1, aligned=False).mean((2, 3))
    assert got.shape == (3, 12) and torch.allclose(got, want, atol=1e-6)
    # non-square frames: per-axis scales are applied to the boxes before a scale-1 roi_align
    wide = roi_mean(multi, boxes, 7, (0.25, 0.5))
    scaled = [b * torch.tensor([0.25, 0.5, 0.25, 0.5]) for b in boxes]
    want_wide = roi_align(ref, scaled, output_size=7, spatial_scale=1.0, sampling_ratio=-1, aligned=False).mean((2, 3))
    assert torch.allclose(wide, want_wide, atol=1e-6)


def test_clamping_dropping_and_cap():
    boxes = torch.tensor([[-10.0, -10.0, 20.0, 20.0],   # clamped to (0,0,20,20)
                          [70.0, 70.0, 90.0, 90.0],     # fully outside a 64x64 view: dropped
                          [30.0, 30.0, 30.0, 40.0],     # zero width: dropped
                          [10.0, 10.0, 100.0, 30.0],    # clamped to (10,10,64,30)
                          [1.0, 2.0, 3.0, 4.0]])
    kept = clamp_boxes(boxes, 64, 64)
    assert torch.equal(kept, torch.tensor([[0.0, 0, 20, 20], [10, 10, 64, 30], [1, 2, 3, 4]]))
    roi = RoIObjectTokens([two_level_spec(64)], 8, max_boxes=2)
    ctx = VisualContext({"hires": (64, 64)}, boxes={"hires": [boxes, boxes[:1]]})
    feats = VisualFeatures(torch.randn(2, 9, 8), (3, 3), {"fine": torch.randn(2, 3, 16, 16),
                                                          "coarse": torch.randn(2, 2, 8, 8)})
    roi([feats], ctx)
    assert [g.shape[0] for g in ctx.extra_groups[0]] == [2, 1]


def test_empty_boxes_give_zero_length_groups_still_in_the_graph():
    roi = RoIObjectTokens([two_level_spec(64)], 8)
    feats = VisualFeatures(torch.randn(2, 9, 8), (3, 3), {"fine": torch.randn(2, 3, 16, 16),
                                                          "coarse": torch.randn(2, 2, 8, 8)})
    ctx = VisualContext({"hires": (64, 64)}, boxes={"hires": [torch.zeros(0, 4), torch.tensor([[80.0, 0, 90, 9]])]})
    roi([feats], ctx)
    group = ctx.extra_groups[0]
    assert [tuple(g.shape) for g in group] == [(0, 8), (0, 8)]
    torch.cat(group).sum().backward()
    assert all(p.grad is not None for p in roi.parameters())
    # no boxes at all (plain chat): no object tokens
    ctx2 = VisualContext({"hires": (64, 64)}, boxes=None)
    roi([feats], ctx2)
    assert [g.shape[0] for g in ctx2.extra_groups[0]] == [0, 0]


def test_stream_and_map_selection():
    a = StreamSpec("a", 8, 4, (2, 2), ImageView("base", 32), (("s1", 4, 8),))
    b = StreamSpec("b", 8, 4, (2, 2), ImageView("hires", 64), (("s1", 4, 8), ("s2", 6, 16)))
    plain = StreamSpec("clip", 8, 4, (2, 2), ImageView("base", 32))
    with pytest.raises(Incompatible, match="set roi's stream argument"):
        RoIObjectTokens([a, b], 16)
    assert RoIObjectTokens([a, b], 16, stream="b").view_name == "hires"
    assert RoIObjectTokens([a, b], 16, stream=0).in_channels == 4
    assert RoIObjectTokens([plain, b], 16, maps=["s2"]).in_channels == 6
    with pytest.raises(Incompatible, match="roi before convgate"):
        RoIObjectTokens([plain], 16)
    with pytest.raises(Incompatible, match="stream index"):
        RoIObjectTokens([a, b], 16, stream=2)
    with pytest.raises(Incompatible, match="s9"):
        RoIObjectTokens([b], 16, maps=["s9"])
    with pytest.raises(ConfigError, match="output_size"):
        RoIObjectTokens([b], 16, output_size=0)


# -- full model ------------------------------------------------------------------------------------
def tiny_roi_model(fusion=("roi",)):
    torch.manual_seed(0)
    cfg = ModelConfig.from_dict({"encoders": [{"name": "tiny-conv", "args": {"width": 32}}], "fusion": list(fusion),
                                 "connector": "mlp2x_gelu", "llm": {"name": "tiny-llama", "args": {"hidden_size": 64}},
                                 "max_length": 256})
    return build_model(cfg)


def test_object_tokens_follow_the_image_tokens_in_a_full_forward():
    model = tiny_roi_model().eval()
    assert model.needs_boxes
    proc = MultimodalProcessor.for_model(model)
    img = Image.new("RGB", (80, 60), (200, 30, 30))
    img2 = Image.new("RGB", (64, 64), (10, 200, 30))
    # original-pixel boxes; the third one of the first image falls outside the picture and is dropped
    b1 = [[5, 5, 40, 30], [20, 10, 79, 59], [500, 500, 600, 600]]
    f1 = proc([Turn("user", "<image>\nWhat is it?"), Turn("assistant", "a red thing")], [img], boxes=[b1])
    f2 = proc([Turn("user", "Hello there"), Turn("assistant", "hi")], [], boxes=[])
    f3 = proc([Turn("user", "<image> and <image>?"), Turn("assistant", "two")], [img, img2],
              boxes=[[[0, 0, 30, 30]], []])
    batch = collate([f1, f2, f3], model.tokenizer.pad_token_id, views=list(model.views))
    seen = {}
    hook = model.llm.register_forward_pre_hook(lambda mod, args: seen.setdefault("embeds", args[0]))
    with torch.no_grad():
        out = model(**batch)
    hook.remove()

    assert out.logits.shape[0] == 3  # text-only row adds no extra row
    spans = out.image_spans
    assert [(s.row, s.num_main, s.num_total) for s in spans] == [(0, 16, 18), (2, 16, 17), (2, 16, 16)]
    assert spans[2].start > spans[1].start + spans[1].num_total  # text between the two images

    # independent computation: encoder -> roi -> projector
    pix = batch["pixel_values"]["base"]
    with torch.no_grad():
        feats = model.encoders[0](pix)
        ctx = VisualContext({"base": (64, 64)}, boxes=batch["boxes"])
        streams = model.connectors[0]([feats], ctx)
        main = model.connectors[1](streams, ctx)[0].tokens
    objects = ctx.extra_groups[0]
    assert [o.shape[0] for o in objects] == [2, 1, 0]
    embeds = seen["embeds"]
    for k, s in enumerate(spans):
        got_main = embeds[s.row, s.start:s.start + s.num_main]
        got_obj = embeds[s.row, s.start + s.num_main:s.start + s.num_total]
        assert torch.allclose(got_main, main[k], atol=1e-5)
        assert torch.allclose(got_obj, objects[k], atol=1e-5)
        assert (out.labels[s.row, s.start:s.start + s.num_total] == IGNORE_INDEX).all()
    # the text after the first image follows its object tokens directly
    text_after = embeds[0, spans[0].start + spans[0].num_total]
    first_text_id = batch["input_ids"][0][(batch["input_ids"][0] == -200).nonzero()[0, 0] + 1]
    assert torch.allclose(text_after, model.llm.embed(first_text_id.view(1))[0])


def test_empty_boxes_in_a_full_model_keep_the_projector_in_the_graph():
    model = tiny_roi_model()
    proc = MultimodalProcessor.for_model(model)
    img = Image.new("RGB", (64, 64), (50, 50, 200))
    f = proc([Turn("user", "<image>\nColour?"), Turn("assistant", "blue")], [img], boxes=[[]])
    batch = collate([f], model.tokenizer.pad_token_id, views=list(model.views))
    out = model(**batch)
    assert out.image_spans[0].num_total == 16
    out.loss.backward()
    roi = model.connectors[0]
    assert all(p.grad is not None and not p.grad.any() for p in roi.parameters())


def test_roi_after_convgate_single_encoder_and_refusal_with_two_views():
    model = tiny_roi_model(("convgate", "roi"))  # one encoder: its maps pass through convgate
    assert model.connectors[1].view_name == "base" and model.connectors[1].in_channels == 64
    cfg = ModelConfig.from_dict({"encoders": [{"name": "clip", "args": {"config": "tiny"}},
                                              {"name": "tiny-conv", "args": {"view": "hires"}}],
                                 "fusion": ["convgate", "roi"], "connector": "mlp2x_gelu", "llm": "tiny-llama"})
    with pytest.raises(IncompatibleComponentsError, match=r"fusion 'roi'.*roi before convgate"):
        build_model(cfg, meta=True)
