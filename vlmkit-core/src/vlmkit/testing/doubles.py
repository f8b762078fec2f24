"""Minimal partner components the conformance kit assembles around the component under test.

A suite builds a whole model (encoder -> connectors -> tiny-llama), so testing an encoder needs a
connector and testing a connector needs an encoder. The kit brings its own, so that a plugin is
tested against core alone, with no other vlmkit package installed:

* ``kit-grid`` (``GridEncoder``): a tiny convolutional encoder. Stride ``stride`` (16) gives a token
  grid; it also carries two feature maps (``stage1`` at stride/2, ``stage2`` at stride) for
  connectors that read maps (RoI pooling, multi-level fusion). ``view`` names the image view, so two
  of them at different sizes make a low-res/high-res pair.
* ``kit-linear`` (``LinearConnector``): one stream -> ``Linear`` to the LLM width.

They are registered in-process (distribution ``vlmkit-conformance``) for the duration of each check
only, so the registry outside a test is untouched. A suite can still name other partners (its
``encoders`` / ``connector`` / ``final_connector`` class attributes).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from vlmkit.model.contracts import Connector, ImageView, StreamSpec, VisionEncoder, VisualContext, VisualFeatures, single_stream

GRID_ENCODER = "kit-grid"
LINEAR_CONNECTOR = "kit-linear"


class GridEncoder(VisionEncoder):
    """Test double: two strided convolutions and a LayerNorm; a token grid plus two feature maps."""

    def __init__(self, image_size: int = 32, width: int = 32, stride: int = 16, resize: str = "pad",
                 view: str = "base"):
        super().__init__()
        if stride < 2 or stride % 2:
            from vlmkit.errors import ConfigError

            raise ConfigError(f"encoder '{GRID_ENCODER}': stride must be an even number >= 2, got {stride}")
        self.stride = stride
        self.output_dim = width
        self.view = ImageView(view, image_size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), resize, multiple=stride)
        self.stage1 = nn.Sequential(nn.Conv2d(3, width, stride // 2, stride // 2), nn.GELU())
        self.stage2 = nn.Sequential(nn.Conv2d(width, width, 2, 2), nn.GELU())
        self.norm = nn.LayerNorm(width)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        return height // self.stride, width // self.stride

    def feature_maps(self) -> tuple[tuple[str, int, int], ...]:
        return (("stage1", self.output_dim, self.stride // 2), ("stage2", self.output_dim, self.stride))

    def named_parts(self) -> dict[str, list[str]]:
        return {"stage1": ["stage1"], "stage2": ["stage2"], "norm": ["norm"]}

    def forward(self, pixel_values: torch.Tensor) -> VisualFeatures:
        s1 = self.stage1(pixel_values.to(self.stage1[0].weight.dtype))
        s2 = self.stage2(s1)
        tokens = self.norm(s2.flatten(2).transpose(1, 2))
        return VisualFeatures(tokens, (s2.shape[-2], s2.shape[-1]), {"stage1": s1, "stage2": s2})


class LinearConnector(Connector):
    """Test double: one stream, one ``Linear`` to the LLM width (grid and maps pass through)."""

    def __init__(self, inputs: Sequence[StreamSpec], d_llm: int):
        super().__init__()
        self.input = single_stream(inputs, f"connector '{LINEAR_CONNECTOR}'")
        self.proj = nn.Linear(self.input.dim, d_llm)
        self.d_llm = d_llm

    def output_specs(self) -> list[StreamSpec]:
        s = self.input
        return [StreamSpec(self.component_name or LINEAR_CONNECTOR, self.d_llm, s.num_tokens, s.grid, s.view, s.maps)]

    def forward(self, streams: list[VisualFeatures], context: VisualContext) -> list[VisualFeatures]:
        f = streams[0]
        return [VisualFeatures(self.proj(f.tokens.to(self.proj.weight.dtype)), f.grid, f.maps)]


#: (kind, name, class) of every double the kit registers while a check runs
DOUBLES: tuple[tuple[str, str, Any], ...] = (
    ("encoder", GRID_ENCODER, GridEncoder),
    ("connector", LINEAR_CONNECTOR, LinearConnector),
)
