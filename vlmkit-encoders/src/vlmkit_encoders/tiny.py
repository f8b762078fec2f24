"""A tiny convolutional encoder for tests and the embedded demo (no weights to download).

Stride 16: a 64 px image gives a 4x4 grid of tokens. Trains from scratch in minutes on a CPU.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from vlmkit.model.contracts import ImageView, VisionEncoder, VisualFeatures
from vlmkit.plugins.arguments import PositiveInt


class TinyConvEncoder(VisionEncoder):
    STRIDE = 16

    def __init__(self, image_size: PositiveInt = 64, width: PositiveInt = 64,
                 resize: Literal["pad", "square", "resize", "native"] = "pad", view: str = "base"):
        super().__init__()
        self.output_dim = width
        self.view = ImageView(view, image_size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), resize, multiple=self.STRIDE)
        half = max(8, width // 2)
        self.stem = nn.Sequential(nn.Conv2d(3, half, 4, 4), nn.GELU())
        self.stage1 = nn.Sequential(nn.Conv2d(half, width, 2, 2), nn.GELU())
        self.stage2 = nn.Sequential(nn.Conv2d(width, width, 2, 2), nn.GELU())
        self.norm = nn.LayerNorm(width)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        return height // self.STRIDE, width // self.STRIDE

    def feature_maps(self) -> tuple[tuple[str, int, int], ...]:
        return (("stage1", self.output_dim, 8), ("stage2", self.output_dim, 16))

    def named_parts(self) -> dict[str, list[str]]:
        parts: dict[str, list[str]] = {}
        for n, _ in self.named_parameters():
            parts.setdefault(n.split(".")[0], []).append(n)
        return parts

    def forward(self, pixel_values: torch.Tensor) -> VisualFeatures:
        x = pixel_values.to(self.stem[0].weight.dtype)
        s1 = self.stage1(self.stem(x))
        s2 = self.stage2(s1)
        b, c, h, w = s2.shape
        tokens = self.norm(s2.flatten(2).transpose(1, 2))
        return VisualFeatures(tokens, (h, w), {"stage1": s1, "stage2": s2})
