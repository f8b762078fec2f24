"""Concatenate several encoder streams on channels (same token grid required)."""

from __future__ import annotations

from typing import Sequence

import torch

from vlmkit.errors import Incompatible
from vlmkit.model.contracts import Connector, StreamSpec, VisualContext, VisualFeatures


class ChannelConcat(Connector):
    def __init__(self, inputs: Sequence[StreamSpec], d_llm: int):
        super().__init__()
        if len(inputs) < 2:
            raise Incompatible("number of feature streams", "2 or more", len(inputs), "concat fuses several encoders")
        counts = {s.num_tokens for s in inputs}
        if len(counts) != 1:
            raise Incompatible("tokens per image", "the same count for every encoder",
                               ", ".join(f"{s.source}={s.num_tokens}" for s in inputs))
        self.inputs = list(inputs)

    def output_specs(self) -> list[StreamSpec]:
        s0 = self.inputs[0]
        maps: dict[str, tuple[str, int, int]] = {}
        for s in self.inputs:  # a map name seen twice keeps the first stream's map, as forward does
            for m in s.maps:
                maps.setdefault(m[0], m)
        return [StreamSpec(self.component_name or "concat", sum(s.dim for s in self.inputs), s0.num_tokens, s0.grid,
                           s0.view, tuple(maps.values()))]

    def forward(self, streams: list[VisualFeatures], context: VisualContext) -> list[VisualFeatures]:
        maps: dict[str, torch.Tensor] = {}
        for s in streams:
            for k, v in s.maps.items():
                maps.setdefault(k, v)
        return [VisualFeatures(torch.cat([s.tokens for s in streams], -1), streams[0].grid, maps)]
