"""S2 multi-scale wrapper (DenseFusion's ``--s2``, after bfshi/scaling_on_scales), over any grid encoder.

For each scale s (ascending): bicubic-resize the input to s x s (in fp32, align_corners False),
cut it into non-overlapping tiles of the inner encoder's size (chessboard: row-major tiles, batch
innermost), encode all tiles of that scale in one batch, merge the tiles back into one map, and
area-pool it to the grid of the smallest scale. The maps are concatenated on channels in scale
order. CLIP-L/14-336 with scales [336, 672, 1008] reads a 1008 px view and gives 576 tokens of
3 x 1024 = 3072 at the cost of 1 + 4 + 9 = 14 CLIP passes per image.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F

from vlmkit.errors import ConfigError, Incompatible
from vlmkit.model.assembly import build_component
from vlmkit.model.config import ComponentConfig
from vlmkit.model.contracts import BuildOptions, VisionEncoder, VisualFeatures

#: default scales as multiples of the inner encoder's size: [336, 672, 1008] for CLIP-336
DEFAULT_SCALE_FACTORS = (1, 2, 3)


def split_chessboard(x: torch.Tensor, n: int) -> torch.Tensor:
    """(B, C, n*h, n*w) -> (n*n*B, C, h, w): tile (i, j) of image b lands at index (i*n + j)*B + b."""
    b, c, H, W = x.shape
    if H % n or W % n:
        raise ValueError(f"cannot split a {H}x{W} map into {n}x{n} equal tiles")
    h, w = H // n, W // n
    return x.reshape(b, c, n, h, n, w).permute(2, 4, 0, 1, 3, 5).reshape(n * n * b, c, h, w)


def merge_chessboard(x: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of ``split_chessboard``: (n*n*B, C, h, w) -> (B, C, n*h, n*w)."""
    nnb, c, h, w = x.shape
    if nnb % (n * n):
        raise ValueError(f"{nnb} tiles are not a whole number of {n}x{n} chessboards")
    b = nnb // (n * n)
    return x.reshape(n, n, b, c, h, w).permute(2, 3, 0, 4, 1, 5).reshape(b, c, n * h, n * w)


class S2Encoder(VisionEncoder):
    """Multi-scale tiles of one inner grid encoder, concatenated on channels.

    ``scales`` default to 1x, 2x and 3x the inner encoder's size ([336, 672, 1008] for CLIP-336);
    each must be a multiple of that size. They are used in ascending order, as in the original.
    """

    tiny_args = {"encoder": {"name": "clip", "args": {"config": "tiny"}}}

    def __init__(self, encoder: str | dict = "clip", scales: list[int] | None = None,
                 build: BuildOptions = BuildOptions()):
        super().__init__()
        spec = ComponentConfig.parse(encoder, "encoder 's2'.encoder")
        if spec.name.split(":")[-1] == "s2":
            raise ConfigError("encoder 's2': the inner encoder cannot be another s2 wrapper")
        self.inner = build_component("encoder", spec, build=build)
        if not isinstance(self.inner, VisionEncoder):
            raise ConfigError(f"encoder 's2': inner '{spec.name}' is not a vlmkit VisionEncoder")
        self._inner_spec = spec
        tile = self.inner.view.size
        inner_grid = self.inner.grid(tile, tile)
        if inner_grid is None:
            raise Incompatible("inner encoder tokens", "a spatial grid", f"'{spec.name}' tokens without a grid",
                               "s2 merges tiles into a map; use a grid encoder (clip with select=patch, siglip, "
                               "convnext, ...)")
        if self.inner.view.resize == "native":
            raise Incompatible("inner encoder view", "a square view (pad, square or resize)", "resize='native'",
                               "s2 tiles a square image")
        if scales is None:
            scales = [tile * k for k in DEFAULT_SCALE_FACTORS]
        self.scales = sorted(int(s) for s in scales)
        if not self.scales or len(set(self.scales)) != len(self.scales):
            raise ConfigError(f"encoder 's2': scales must be distinct sizes, got {scales}")
        bad = [s for s in self.scales if s <= 0 or s % tile]
        if bad:
            raise ConfigError(f"encoder 's2': every scale must be a multiple of the inner encoder's size {tile}; "
                              f"got {bad}")
        self.tile = tile
        self.splits = [s // tile for s in self.scales]
        self.tile_grid = inner_grid
        self.output_dim = self.inner.output_dim * len(self.scales)
        self.view = replace(self.inner.view, size=self.scales[-1])

    # -- geometry ----------------------------------------------------------------------------
    def grid(self, height: int, width: int) -> tuple[int, int]:
        n = self.splits[0]
        return self.tile_grid[0] * n, self.tile_grid[1] * n

    # -- parts -------------------------------------------------------------------------------
    def named_parts(self) -> dict[str, list[str]]:
        """The inner encoder's parts (``layers.N`` for CLIP, ...), so recipes address them unchanged."""
        return {k: [f"inner.{n}" for n in names] for k, names in self.inner.named_parts().items()}

    def checkpoint_args(self, args: dict[str, Any]) -> dict[str, Any]:
        inner = {"name": self._inner_spec.name, "args": self.inner.checkpoint_args(dict(self._inner_spec.args))}
        return {"encoder": inner, "scales": list(self.scales)}

    # -- compute -----------------------------------------------------------------------------
    def forward(self, pixel_values: torch.Tensor) -> VisualFeatures:
        out_grid = self.grid(self.tile, self.tile)
        maps = []
        for size, n in zip(self.scales, self.splits):
            x = F.interpolate(pixel_values.float(), size=(size, size), mode="bicubic",
                              align_corners=False).to(pixel_values.dtype)
            feats = self.inner(split_chessboard(x, n))
            merged = merge_chessboard(feats.as_map(), n)
            if tuple(merged.shape[-2:]) != out_grid:
                merged = F.interpolate(merged.float(), size=out_grid, mode="area").to(merged.dtype)
            maps.append(merged)
        fused = torch.cat(maps, dim=1)
        return VisualFeatures(fused.flatten(2).transpose(1, 2), out_grid)
