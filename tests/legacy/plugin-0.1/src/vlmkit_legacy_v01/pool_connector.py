"""``v01-pool``: average-pool the token grid, then project to the LLM width.

``pool`` x ``pool`` average pooling divides the number of visual tokens by ``pool**2`` (2: a 14x14
grid becomes 7x7); a ``Linear -> GELU -> Linear`` maps the pooled tokens to the LLM's hidden size.
It needs one stream whose tokens form a grid with sides divisible by ``pool``, and says so at build
time (``Incompatible``) rather than failing in ``forward``.
"""

from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import nn
from vlmkit.contracts import Connector, StreamSpec, VisualContext, VisualFeatures, single_stream
from vlmkit.errors import ConfigError, Incompatible


class PoolProjector(Connector):
    """``pool`` x ``pool`` average pooling of the token grid, then a 2-layer GELU MLP to the LLM width."""

    def __init__(self, inputs: Sequence[StreamSpec], d_llm: int, pool: int = 2):
        super().__init__()
        if pool < 1:
            raise ConfigError(f"connector 'v01-pool': pool must be >= 1, got {pool}")
        self.input = single_stream(inputs, "v01-pool")
        h, w = self.input.require_grid("v01-pool (it pools a 2-D token grid)")
        if h % pool or w % pool:
            raise Incompatible("token grid", f"sides divisible by pool={pool}", f"{h}x{w}",
                               "set connector.pool to a divisor of the grid, or change the encoder's image size")
        self.pool = pool
        self.d_llm = d_llm
        self.proj = nn.Sequential(nn.Linear(self.input.dim, d_llm), nn.GELU(), nn.Linear(d_llm, d_llm))

    def output_specs(self) -> list[StreamSpec]:
        h, w = self.input.grid  # type: ignore[misc]
        grid = (h // self.pool, w // self.pool)
        return [StreamSpec(self.component_name or "v01-pool", self.d_llm, grid[0] * grid[1], grid, self.input.view)]

    def named_parts(self) -> dict[str, list[str]]:
        return {"proj": ["proj"]}

    def forward(self, streams: list[VisualFeatures], context: VisualContext) -> list[VisualFeatures]:
        f = streams[0]
        pooled = F.avg_pool2d(f.as_map(), self.pool)  # (B, C, h/p, w/p)
        tokens = pooled.flatten(2).transpose(1, 2)
        return [VisualFeatures(self.proj(tokens.to(self.proj[0].weight.dtype)), (pooled.shape[-2], pooled.shape[-1]))]
