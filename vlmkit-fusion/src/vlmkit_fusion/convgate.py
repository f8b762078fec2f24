"""Conv-Gate fusion (MG-LLaVA's ``DualPathFuseModule``): add high-resolution detail to low-res tokens.

Two inputs, a low-resolution token grid ``low`` (width C_low) and a high-resolution feature map
``high`` (C_high channels):

* slow path (on ``high``): 1x1 conv C_high->C_high (xavier, zero bias), exact GELU, 1x1 conv
  C_high->C_low initialised to zero;
* fast path (on ``low``, residual): depthwise 7x7 conv (xavier, zero bias), exact GELU, 1x1 conv
  C_low->C_low initialised to zero;
* gate: ``Linear(2*C_low, 512) -> GELU -> Linear(512, 1)`` on the token mean of ``[low, high]``,
  one scalar per image;
* ``out = low + high * tanh(gate)``.

Because both output convs start at zero, the module is the identity on ``low`` at initialisation.
6,085,121 parameters for (1024, 1536).

Where the two come from:

* two streams (``--encoder clip --encoder convnext``): ``low`` is the first stream's token grid,
  ``high`` the second stream's map named ``high_map`` or, by default, its tokens as a map (or its
  deepest map when its tokens are not a grid);
* one hierarchical encoder (``--encoder convnext5``): ``low`` is its coarse output grid and ``high``
  the stage map named ``high_map`` or, by default, the map one level finer than the tokens (for
  ConvNeXt stage-5: stage 3, stride 32, pooled 2x2 onto the stride-64 stage-4 grid).

Unlike the original, whose ``view`` call fails unless both grids are 24x24, grids of different sizes
are aligned before the slow path: adaptive average pooling when ``high`` is finer, bilinear
interpolation (``align_corners=False``) when it is coarser. The output is one stream with the low
stream's width and grid.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vlmkit.errors import Incompatible
from vlmkit.model.contracts import Connector, StreamSpec, VisualContext, VisualFeatures


def align_grid(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resample a (B, C, H, W) map onto an (h, w) grid: average-pool when finer, bilinear when coarser."""
    h, w = size
    H, W = x.shape[-2:]
    if (H, W) == (h, w):
        return x
    if H >= h and W >= w:
        return F.adaptive_avg_pool2d(x, (h, w))
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)


def _token_stride(spec: StreamSpec) -> float | None:
    if spec.grid is None or spec.view is None:
        return None
    return spec.view.size / max(spec.grid)


class ConvGateFusion(Connector):
    """MG-LLaVA Conv-Gate: ``low + slow(high) * tanh(gate)`` with a residual depthwise fast path on ``low``.

    ``high_map`` names the feature map used as the high-resolution input (see the module docstring
    for the default). ``zero_init=False`` gives the output convs PyTorch's default init (no longer
    the identity at start).
    """

    def __init__(self, inputs: Sequence[StreamSpec], d_llm: int, high_map: str | None = None,
                 gate_hidden: int = 512, zero_init: bool = True):
        super().__init__()
        inputs = list(inputs)
        if len(inputs) not in (1, 2):
            raise Incompatible("number of feature streams", "1 (a hierarchical encoder) or 2 (low-res + high-res)",
                               f"{len(inputs)} ({', '.join(s.source for s in inputs)})",
                               "convgate fuses one low-res grid with one high-res map")
        low = inputs[0]
        low.require_grid("convgate (its low-res input is reshaped to a 2-D map)")
        self.low_spec = low
        if len(inputs) == 2:
            self.high_stream, self.high_map, high_dim = self._pick_from_second(inputs[1], high_map)
        else:
            self.high_stream, self.high_map, high_dim = 0, *self._pick_finer_map(low, high_map)
        self.low_dim, self.high_dim = low.dim, high_dim
        # maps stay attached to the output only when they share its view (their strides stay true)
        self.map_sources = [i for i, s in enumerate(inputs) if s.view == low.view]
        self.kept_maps = tuple(m for i in self.map_sources for m in inputs[i].maps)

        self.slow_conv = nn.Conv2d(high_dim, high_dim, 1)
        self.slow_proj = nn.Conv2d(high_dim, low.dim, 1)
        self.fast_conv = nn.Conv2d(low.dim, low.dim, 7, padding=3, groups=low.dim)
        self.fast_proj = nn.Conv2d(low.dim, low.dim, 1)
        self.gate = nn.Sequential(nn.Linear(2 * low.dim, gate_hidden), nn.GELU(), nn.Linear(gate_hidden, 1))
        self.act = nn.GELU()  # exact (erf) form, as F.gelu
        for conv in (self.slow_conv, self.fast_conv):
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
        if zero_init:
            for conv in (self.slow_proj, self.fast_proj):
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)

    # -- build-time choice of the high-resolution input ------------------------------------------
    @staticmethod
    def _pick_from_second(high: StreamSpec, name: str | None) -> tuple[int, str | None, int]:
        maps = {m[0]: m for m in high.maps}
        if name is not None:
            if name not in maps:
                raise Incompatible(f"feature map '{name}' of '{high.source}'", "one of its maps",
                                   ", ".join(maps) or "no maps", "set high_map to one of these, or leave it unset")
            return 1, name, maps[name][1]
        if high.grid is not None:
            return 1, None, high.dim
        if high.maps:
            deepest = max(high.maps, key=lambda m: m[2])
            return 1, deepest[0], deepest[1]
        raise Incompatible(f"high-res input from '{high.source}'", "a token grid or a feature map",
                           f"{high.num_tokens} tokens without a grid and no maps")

    @staticmethod
    def _pick_finer_map(low: StreamSpec, name: str | None) -> tuple[str, int]:
        maps = {m[0]: m for m in low.maps}
        if name is not None:
            if name not in maps:
                raise Incompatible(f"feature map '{name}' of '{low.source}'", "one of its maps",
                                   ", ".join(maps) or "no maps", "set high_map to one of these, or leave it unset")
            return name, maps[name][1]
        stride = _token_stride(low)
        finer = [m for m in low.maps if stride is not None and m[2] < stride]
        if not finer:
            have = ", ".join(f"{m[0]} (stride {m[2]})" for m in low.maps) or "none"
            raise Incompatible(f"a feature map of '{low.source}' finer than its tokens",
                               f"a map with stride < {stride:g}" if stride else "a map with a smaller stride",
                               f"maps: {have}",
                               "use a hierarchical encoder (e.g. convnext5) or add a high-res encoder "
                               "(--encoder clip --encoder convnext)")
        nearest = max(finer, key=lambda m: m[2])  # one level finer than the tokens
        return nearest[0], nearest[1]

    # -- contract -------------------------------------------------------------------------------
    def output_specs(self) -> list[StreamSpec]:
        s = self.low_spec
        return [StreamSpec(self.component_name or "convgate", s.dim, s.num_tokens, s.grid, s.view, self.kept_maps)]

    def named_parts(self) -> dict[str, list[str]]:
        return {"slow_path": ["slow_conv", "slow_proj"], "fast_path": ["fast_conv", "fast_proj"], "gate": ["gate"]}

    def fuse(self, low: torch.Tensor, grid: tuple[int, int], high: torch.Tensor) -> torch.Tensor:
        """``low`` (B, N, C_low) on ``grid``; ``high`` (B, C_high, H, W). Returns (B, N, C_low)."""
        dtype = self.slow_conv.weight.dtype
        b, _, c = low.shape
        h, w = grid
        high = align_grid(high.to(dtype), (h, w))
        high = self.slow_proj(self.act(self.slow_conv(high))).flatten(2).transpose(1, 2)  # (B, N, C_low)
        low2d = low.to(dtype).transpose(1, 2).reshape(b, c, h, w)
        low2d = low2d + self.fast_proj(self.act(self.fast_conv(low2d)))
        low = low2d.flatten(2).transpose(1, 2)
        g = self.gate(torch.cat([low, high], -1).mean(1)).unsqueeze(1)  # (B, 1, 1): one scalar per image
        return low + high * torch.tanh(g)

    def forward(self, streams: list[VisualFeatures], context: VisualContext) -> list[VisualFeatures]:
        low = streams[0]
        src = streams[self.high_stream]
        high = src.maps[self.high_map] if self.high_map is not None else src.as_map()
        out = self.fuse(low.tokens, low.grid, high)  # type: ignore[arg-type]
        maps = {k: v for i in self.map_sources for k, v in streams[i].maps.items()}
        return [VisualFeatures(out, low.grid, maps)]
