"""AnyRes merge: one image's crops of projected tokens -> the one sequence the LLM sees.

Runs after the connectors, which see every crop as an image of its own (transformers' LLaVA-NeXT projects
each crop before packing, so does vlmkit). The order is LLaVA-NeXT's: the base crop's tokens, then the
tiles laid out as one (rows*h, cols*w) grid, unpadded to the image's aspect ratio, capped (OneVision's
``anyres_max``), and read row by row with the learned image-newline token after each row. The counts
come from ``vlmkit.model.tiling`` so that text budgeting and the forward pass never disagree.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vlmkit.model.tiling import Tiling, capped_grid, grid_shape, unpadded_grid


class TileMerge(nn.Module):
    """Owns the image-newline embedding (``spatial_unpad``); ``forward`` lays out one image's crops."""

    def __init__(self, tiling: Tiling, tile: int, crop_grid: tuple[int, int] | None, d_llm: int):
        super().__init__()
        self.tiling, self.tile, self.crop_grid = tiling, tile, crop_grid
        # transformers' LLaVA-NeXT initialises it as randn / sqrt(hidden size)
        self.image_newline = nn.Parameter(torch.randn(d_llm) / math.sqrt(d_llm)) if tiling.newline else None

    def forward(self, crops: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``crops``: (n, N, D) tokens of one image, base first; ``size``: its original (height, width)."""
        n, _, d = crops.shape
        newline = self.image_newline
        if n == 1:  # not tiled: the base crop, ended by one newline
            return crops[0] if newline is None else torch.cat([crops[0], newline[None].to(crops)])
        if self.tiling.merge == "flat":
            return crops.reshape(-1, d)
        rows, cols = grid_shape(size, self.tiling.pinpoints, self.tile)
        if n != 1 + rows * cols:
            raise ValueError(f"an image of {size[1]}x{size[0]} px is {rows}x{cols} tiles plus the base crop, "
                             f"but {n} crops came: pixel values and image_sizes do not belong together")
        gh, gw = self.crop_grid  # type: ignore[misc] - a tiling model has a grid (checked at build)
        grid = crops[1:].reshape(rows, cols, gh, gw, d).permute(4, 0, 2, 1, 3).reshape(d, rows * gh, cols * gw)
        if self.tiling.merge == "spatial":
            return torch.cat([crops[0], grid.flatten(1).T])
        uh, uw, top, left = unpadded_grid((rows * gh, cols * gw), size, self.tiling.unpad_rounding)
        grid = grid[:, top:top + uh, left:left + uw]
        ch, cw = capped_grid((uh, uw), self.tiling.anyres_max, gh)
        if (ch, cw) != (uh, uw):
            grid = nn.functional.interpolate(grid[None], [ch, cw], mode="bilinear")[0]
        assert newline is not None
        grid = torch.cat([grid, newline[:, None, None].to(grid).expand(d, grid.shape[1], 1)], dim=2)
        return torch.cat([crops[0], grid.flatten(1).T])
