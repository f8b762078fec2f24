"""``v01-patch``: a patch-embedding encoder (a ViT stem without the transformer).

The image is cut into ``patch`` x ``patch`` squares; each is projected to ``width`` channels, given a
learned position embedding and layer-normalised. A ``image_size`` view gives an
``(image_size / patch)`` square grid of tokens. ``init_from`` names a safetensors file of its weights,
read only when ``vlmkit.build_context.load_pretrained()`` is True (the 0.1 guide's rule).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from vlmkit.build_context import load_pretrained
from vlmkit.contracts import ImageView, VisionEncoder, VisualFeatures
from vlmkit.errors import ConfigError


class PatchEncoder(VisionEncoder):
    """Non-overlapping ``patch`` x ``patch`` squares -> ``width``-channel tokens on a square grid."""

    #: what the conformance kit and `vlmkit info` use to build a tiny instance
    tiny_args = {"image_size": 32, "patch": 8, "width": 32}

    def __init__(self, image_size: int = 224, patch: int = 16, width: int = 256, resize: str = "pad",
                 view: str = "base", init_from: Optional[str] = None):
        super().__init__()
        if patch < 1 or image_size % patch:
            raise ConfigError(f"encoder 'v01-patch': patch {patch} must divide image_size {image_size}")
        if width < 1:
            raise ConfigError(f"encoder 'v01-patch': width must be >= 1, got {width}")
        self.patch = patch
        self.output_dim = width
        self.view = ImageView(view, image_size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), resize)
        side = image_size // patch
        self.proj = nn.Conv2d(3, width, patch, patch)
        self.pos = nn.Parameter(torch.zeros(1, side * side, width))
        self.norm = nn.LayerNorm(width)
        nn.init.trunc_normal_(self.pos, std=0.02)
        if init_from is not None and load_pretrained():
            from safetensors.torch import load_file

            self.load_state_dict(load_file(init_from))

    def grid(self, height: int, width: int) -> tuple[int, int]:
        return height // self.patch, width // self.patch

    def named_parts(self) -> dict[str, list[str]]:
        """Recipes can train ``encoder.v01-patch:embedding`` and ``...:norm`` separately."""
        return {"embedding": ["proj", "pos"], "norm": ["norm"]}

    def forward(self, pixel_values: torch.Tensor) -> VisualFeatures:
        x = self.proj(pixel_values.to(self.proj.weight.dtype))  # (B, C, h, w)
        h, w = x.shape[-2:]
        tokens = x.flatten(2).transpose(1, 2)
        if tokens.shape[1] != self.pos.shape[1]:
            raise ValueError(f"v01-patch: a {h}x{w} grid does not match the {self.view.size} px view it was "
                             "built for")
        return VisualFeatures(self.norm(tokens + self.pos), (h, w))
