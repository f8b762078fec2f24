"""S2 multi-scale wrapper (components.md §5.3-5.4) over CLIP and over a third-party grid encoder."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vlmkit.errors import ConfigError, Incompatible
from vlmkit.model.assembly import build_component
from vlmkit.model.contracts import BuildOptions, ImageView, VisionEncoder, VisualFeatures
from vlmkit.plugins.registry import registry
from vlmkit_encoders.s2 import merge_chessboard, split_chessboard

TINY_CLIP = {"name": "clip", "args": {"config": "tiny"}}  # 56 px, patch 14 -> 4x4 grid, width 64


def s2(inner, scales=None, build: BuildOptions | None = None):
    args = {"encoder": inner} if scales is None else {"encoder": inner, "scales": scales}
    return build_component("encoder", {"name": "s2", "args": args}, build=build)


class PatchMeanEncoder(VisionEncoder):
    """A third-party grid encoder: mean colour of each 8x8 patch, then a 1x1 conv. Records its batches."""

    def __init__(self, image_size: int = 32, width: int = 5):
        super().__init__()
        self.view = ImageView("base", image_size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "pad")
        self.output_dim = width
        self.proj = nn.Conv2d(3, width, 1)
        self.batches: list[int] = []

    def grid(self, height: int, width: int) -> tuple[int, int]:
        return height // 8, width // 8

    def forward(self, pixel_values: torch.Tensor) -> VisualFeatures:
        self.batches.append(pixel_values.shape[0])
        m = self.proj(F.avg_pool2d(pixel_values, 8))
        return VisualFeatures(m.flatten(2).transpose(1, 2), tuple(m.shape[-2:]))


class CLSOnlyEncoder(PatchMeanEncoder):
    def grid(self, height: int, width: int) -> None:
        return None


@pytest.fixture
def third_party():
    registry.register("encoder", "patch-mean", PatchMeanEncoder)
    registry.register("encoder", "cls-only", CLSOnlyEncoder)
    yield
    registry.unregister("encoder", "patch-mean")
    registry.unregister("encoder", "cls-only")


def test_split_merge_identity_and_tile_order():
    x = torch.randn(2, 3, 12, 18)
    tiles = split_chessboard(x, 3)
    assert tuple(tiles.shape) == (18, 3, 4, 6)
    for i in range(3):
        for j in range(3):
            for b in range(2):  # row-major tiles, batch innermost
                assert torch.equal(tiles[(i * 3 + j) * 2 + b], x[b, :, 4 * i:4 * i + 4, 6 * j:6 * j + 6])
    assert torch.equal(merge_chessboard(tiles, 3), x)
    assert torch.equal(merge_chessboard(split_chessboard(x, 1), 1), x)


def test_s2_over_clip_matches_plain_clip_and_pooled_tiles():
    torch.manual_seed(0)
    enc = s2(TINY_CLIP, [56, 112, 168]).eval()
    inner = enc.inner
    assert enc.view.size == 168 and enc.output_dim == 3 * 64 and enc.spec().num_tokens == 16
    x = torch.randn(2, 3, 168, 168)
    with torch.no_grad():
        out = enc(x)
        assert tuple(out.tokens.shape) == (2, 16, 192) and out.grid == (4, 4)
        base = F.interpolate(x, size=(56, 56), mode="bicubic", align_corners=False)
        assert torch.allclose(out.tokens[..., :64], inner(base).tokens, atol=1e-5)
        x2 = F.interpolate(x, size=(112, 112), mode="bicubic", align_corners=False)
        merged = merge_chessboard(inner(split_chessboard(x2, 2)).as_map(), 2)  # (2, 64, 8, 8)
        pooled = F.avg_pool2d(merged, 2).flatten(2).transpose(1, 2)
        assert torch.allclose(out.tokens[..., 64:128], pooled, atol=1e-5)
        # and the 1008-style scale: a 3x3 average of the merged 12x12 map
        x3 = F.interpolate(x, size=(168, 168), mode="bicubic", align_corners=False)
        merged3 = merge_chessboard(inner(split_chessboard(x3, 3)).as_map(), 3)
        assert torch.allclose(out.tokens[..., 128:], F.avg_pool2d(merged3, 3).flatten(2).transpose(1, 2), atol=1e-5)


def test_s2_over_a_third_party_grid_encoder(third_party):
    enc = s2({"name": "patch-mean", "args": {"width": 7}})
    assert enc.scales == [32, 64, 96] and enc.splits == [1, 2, 3]  # default: 1x, 2x, 3x the inner size
    enc = s2({"name": "patch-mean", "args": {"width": 7}}, [96, 32, 64])  # sorted like the original
    assert enc.scales == [32, 64, 96] and enc.view.size == 96
    feats = enc(torch.randn(2, 3, 96, 96))
    assert tuple(feats.tokens.shape) == (2, 16, 21)
    assert enc.inner.batches == [2, 8, 18]  # one batch per scale: 1, 4 and 9 tiles per image
    assert enc.checkpoint_args({}) == {"encoder": {"name": "patch-mean", "args": {"width": 7}}, "scales": [32, 64, 96]}


def test_s2_refuses_what_it_cannot_tile(third_party):
    with pytest.raises(Incompatible, match="grid"):
        s2({"name": "cls-only"})
    with pytest.raises(Incompatible, match="grid"):
        s2({"name": "clip", "args": {"config": "tiny", "select": "cls_patch"}})
    with pytest.raises(ConfigError, match="multiple"):
        s2({"name": "patch-mean"}, [32, 48])
    with pytest.raises(ConfigError, match="unknown argument"):
        s2({"name": "patch-mean", "args": {"widht": 3}})


def test_s2_parts_reach_the_inner_layers():
    enc = s2(TINY_CLIP, [56, 112])
    parts = enc.named_parts()
    assert parts["layers.3"] and all(n.startswith("inner.vision.encoder.layers.3.") for n in parts["layers.3"])
    names = dict(enc.named_parameters())
    assert set(parts["layers.3"]) <= set(names)


def test_s2_paper_size_on_meta():
    with torch.device("meta"):
        enc = s2({"name": "clip", "args": {"config": "large-336", "feature_layer": -2}},
                 build=BuildOptions(pretrained=False, meta=True))
        assert enc.scales == [336, 672, 1008]
        feats = enc(torch.empty(2, 3, 1008, 1008))
    assert tuple(feats.tokens.shape) == (2, 576, 3072) and feats.grid == (24, 24)
    assert enc.view.size == 1008 and enc.spec().dim == 3072
