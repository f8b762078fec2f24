"""Conv-Gate fusion (MG-LLaVA DualPathFuseModule): init identity, parameter count, one gate per image,
grid alignment, the single-encoder map choice and build-time refusals."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlmkit.errors import Incompatible, IncompatibleComponentsError
from vlmkit.model.assembly import build_model
from vlmkit.model.config import ModelConfig
from vlmkit.model.contracts import ImageView, StreamSpec, VisualContext, VisualFeatures
from vlmkit_fusion.convgate import ConvGateFusion, align_grid

CONVNEXT_MAPS = (("stage0", 192, 4), ("stage1", 384, 8), ("stage2", 768, 16), ("stage3", 1536, 32))


def spec(source, dim, grid, view="base", size=64, maps=()):
    n = grid[0] * grid[1] if grid else 5
    return StreamSpec(source, dim, n, grid, ImageView(view, size), tuple(maps))


def ctx():
    return VisualContext(image_sizes={})


def test_parameter_count_clip_convnext():
    low = spec("clip", 1024, (24, 24), "base", 336)
    high = spec("convnext", 1536, (24, 24), "hires", 768, CONVNEXT_MAPS)
    with torch.device("meta"):
        fuse = ConvGateFusion([low, high], 4096)
    assert sum(p.numel() for p in fuse.parameters()) == 6_085_121
    assert fuse.output_specs()[0].dim == 1024 and fuse.output_specs()[0].grid == (24, 24)


@pytest.mark.parametrize("high_grid", [(4, 4), (8, 8), (2, 2)])
def test_identity_at_init_for_random_inputs(high_grid):
    torch.manual_seed(0)
    fuse = ConvGateFusion([spec("a", 16, (4, 4)), spec("b", 24, high_grid, "hires", 128)], 32)
    low = torch.randn(3, 16, 16) * 5
    high = torch.randn(3, high_grid[0] * high_grid[1], 24) * 5
    out = fuse([VisualFeatures(low, (4, 4)), VisualFeatures(high, high_grid)], ctx())
    assert len(out) == 1 and out[0].grid == (4, 4)
    assert torch.equal(out[0].tokens, low)


def _randomise_slow_proj(fuse):
    torch.nn.init.normal_(fuse.slow_proj.weight, std=0.2)
    torch.nn.init.normal_(fuse.slow_proj.bias, std=0.2)


def test_gate_is_one_scalar_per_image():
    torch.manual_seed(1)
    fuse = ConvGateFusion([spec("a", 16, (4, 4)), spec("b", 24, (4, 4), "hires", 64)], 32)
    _randomise_slow_proj(fuse)
    low, high = torch.randn(3, 16, 16), torch.randn(3, 24, 4, 4)
    out = fuse.fuse(low, (4, 4), high)
    h2 = fuse.slow_proj(F.gelu(fuse.slow_conv(high))).flatten(2).transpose(1, 2)  # high' (B, N, C)
    ratio = (out - low) / h2
    per_image = ratio.flatten(1)
    assert torch.allclose(per_image, per_image[:, :1].expand_as(per_image), atol=1e-4)  # one scalar per image
    g = fuse.gate(torch.cat([low, h2], -1).mean(1))  # fast path is still zero: low unchanged
    assert torch.allclose(out - low, h2 * torch.tanh(g).unsqueeze(1), atol=1e-6)
    assert per_image[:, 0].unique().numel() == 3  # and it differs between images


def test_fast_path_is_a_residual_depthwise_conv():
    torch.manual_seed(2)
    fuse = ConvGateFusion([spec("a", 8, (4, 4)), spec("b", 8, (4, 4), "hires", 64)], 32)
    torch.nn.init.normal_(fuse.fast_proj.weight, std=0.3)
    low, high = torch.randn(2, 16, 8), torch.randn(2, 8, 4, 4)
    low2d = low.transpose(1, 2).reshape(2, 8, 4, 4)
    expected = (low2d + fuse.fast_proj(F.gelu(fuse.fast_conv(low2d)))).flatten(2).transpose(1, 2)
    assert torch.allclose(fuse.fuse(low, (4, 4), high), expected, atol=1e-6)  # slow_proj still zero
    assert fuse.fast_conv.groups == 8 and fuse.fast_conv.kernel_size == (7, 7)
    assert torch.equal(fuse.fast_conv.bias, torch.zeros(8)) and torch.equal(fuse.slow_conv.bias, torch.zeros(8))


@pytest.mark.parametrize("high_size,resample", [(8, "pool"), (12, "pool"), (2, "bilinear"), (3, "bilinear")])
def test_mismatched_grids_are_aligned(high_size, resample):
    torch.manual_seed(3)
    fuse = ConvGateFusion([spec("a", 16, (4, 4)), spec("b", 12, (high_size, high_size), "hires", 128)], 32)
    _randomise_slow_proj(fuse)
    low, high = torch.randn(2, 16, 16), torch.randn(2, 12, high_size, high_size)
    out = fuse([VisualFeatures(low, (4, 4)), VisualFeatures(high.flatten(2).transpose(1, 2), (high_size, high_size))],
               ctx())[0].tokens
    if resample == "pool":
        aligned = F.adaptive_avg_pool2d(high, (4, 4))
    else:
        aligned = F.interpolate(high, size=(4, 4), mode="bilinear", align_corners=False)
    assert torch.allclose(align_grid(high, (4, 4)), aligned)
    h2 = fuse.slow_proj(F.gelu(fuse.slow_conv(aligned))).flatten(2).transpose(1, 2)
    g = fuse.gate(torch.cat([low, h2], -1).mean(1))
    assert out.shape == (2, 16, 16)
    assert torch.allclose(out, low + h2 * torch.tanh(g).unsqueeze(1), atol=1e-5)


def test_two_streams_named_high_map_and_maps_kept_only_for_the_low_view():
    low = spec("clip", 16, (4, 4), "base", 64, (("m0", 4, 8),))
    high = spec("convnext", 32, (2, 2), "hires", 128, (("stage0", 8, 16), ("stage1", 32, 64)))
    fuse = ConvGateFusion([low, high], 64, high_map="stage0")
    assert (fuse.high_stream, fuse.high_map, fuse.high_dim) == (1, "stage0", 8)
    assert fuse.output_specs()[0].maps == (("m0", 4, 8),)  # the hires maps' strides would be wrong here
    feats = [VisualFeatures(torch.randn(1, 16, 16), (4, 4), {"m0": torch.randn(1, 4, 8, 8)}),
             VisualFeatures(torch.randn(1, 4, 32), (2, 2), {"stage0": torch.randn(1, 8, 8, 8),
                                                            "stage1": torch.randn(1, 32, 2, 2)})]
    out = fuse(feats, ctx())[0]
    assert set(out.maps) == {"m0"}
    with pytest.raises(Incompatible, match="stage9"):
        ConvGateFusion([low, high], 64, high_map="stage9")


def test_second_stream_without_grid_uses_its_deepest_map():
    high = StreamSpec("x", 10, 7, None, ImageView("hires", 64), (("a", 4, 8), ("b", 6, 32)))
    fuse = ConvGateFusion([spec("clip", 16, (4, 4)), high], 64)
    assert (fuse.high_map, fuse.high_dim) == ("b", 6)


def test_single_hierarchical_encoder_uses_the_map_one_level_finer():
    # ConvNeXt stage-5 shape: tokens = stage 4 (stride 64, 12x12 at 768), maps stage0..stage4
    maps = CONVNEXT_MAPS + (("stage4", 3072, 64),)
    enc = spec("convnext5", 3072, (12, 12), "base", 768, maps)
    with torch.device("meta"):
        fuse = ConvGateFusion([enc], 4096)
    assert (fuse.high_stream, fuse.high_map, fuse.high_dim) == (0, "stage3", 1536)
    assert fuse.output_specs()[0].grid == (12, 12) and fuse.output_specs()[0].maps == maps
    # stage 3 (24x24) is average-pooled 2x2 onto the stage-4 grid
    small = ConvGateFusion([spec("c5", 8, (2, 2), "base", 128, (("s3", 4, 32), ("s4", 8, 64)))], 16)
    _randomise_slow_proj(small)
    s3, low = torch.randn(1, 4, 4, 4), torch.randn(1, 4, 8)
    out = small([VisualFeatures(low, (2, 2), {"s3": s3, "s4": torch.randn(1, 8, 2, 2)})], ctx())[0]
    h2 = small.slow_proj(F.gelu(small.slow_conv(F.avg_pool2d(s3, 2)))).flatten(2).transpose(1, 2)
    g = small.gate(torch.cat([low, h2], -1).mean(1))
    assert torch.allclose(out.tokens, low + h2 * torch.tanh(g).unsqueeze(1), atol=1e-5)
    assert set(out.maps) == {"s3", "s4"}


def test_single_encoder_with_explicit_high_map():
    enc = spec("c5", 8, (2, 2), "base", 128, (("s2", 3, 16), ("s3", 4, 32), ("s4", 8, 64)))
    fuse = ConvGateFusion([enc], 16, high_map="s2")
    assert (fuse.high_map, fuse.high_dim) == ("s2", 3)


def test_refuses_single_encoder_without_a_finer_map():
    with pytest.raises(Incompatible, match="finer than its tokens"):
        ConvGateFusion([spec("clip", 16, (4, 4))], 32)
    with pytest.raises(Incompatible, match="finer than its tokens"):
        ConvGateFusion([spec("c", 16, (4, 4), maps=(("same", 16, 16), ("coarse", 8, 32)))], 32)


def test_refuses_tokens_without_grid_and_wrong_stream_count():
    with pytest.raises(Incompatible, match="token grid"):
        ConvGateFusion([StreamSpec("clip", 16, 17, None, ImageView()), spec("b", 8, (4, 4))], 32)
    with pytest.raises(Incompatible, match="number of feature streams"):
        ConvGateFusion([spec("a", 8, (4, 4)), spec("b", 8, (4, 4)), spec("c", 8, (4, 4))], 32)


def test_build_refuses_clip_cls_patch_with_a_clear_message():
    cfg = ModelConfig.from_dict({
        "encoders": [{"name": "clip", "args": {"config": "tiny", "select": "cls_patch"}},
                     {"name": "tiny-conv", "args": {"view": "hires"}}],
        "fusion": ["convgate"], "connector": "mlp2x_gelu", "llm": "tiny-llama"})
    with pytest.raises(IncompatibleComponentsError) as err:
        build_model(cfg, meta=True)
    msg = str(err.value)
    assert "fusion 'convgate'" in msg and "'clip'" in msg and "token grid" in msg and "without a grid" in msg


def test_build_refuses_single_clip_encoder():
    cfg = ModelConfig.from_dict({"encoders": [{"name": "clip", "args": {"config": "tiny"}}],
                                 "fusion": ["convgate"], "connector": "mlp2x_gelu", "llm": "tiny-llama"})
    with pytest.raises(IncompatibleComponentsError, match="finer than its tokens"):
        build_model(cfg, meta=True)
