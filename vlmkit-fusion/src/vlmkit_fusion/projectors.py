"""Projectors: one visual stream -> the LLM width (LLaVA's ``linear`` and ``mlpNx_gelu``).

``mlpNx_gelu`` is ``Linear(C, D)`` followed by (N-1) x [exact GELU, ``Linear(D, D)``], PyTorch default
init, as in LLaVA-1.5. ``layernorm=True`` puts a LayerNorm(C) first (ViP-LLaVA's projector).
"""

from __future__ import annotations

from typing import Sequence

from torch import nn

from vlmkit.errors import ConfigError
from vlmkit.model.contracts import Connector, StreamSpec, VisualContext, VisualFeatures, single_stream


class MLPProjector(Connector):
    def __init__(self, inputs: Sequence[StreamSpec], d_llm: int, depth: int = 2, layernorm: bool = False,
                 layernorm_eps: float = 1e-5):
        super().__init__()
        if depth < 1:
            raise ConfigError(f"connector 'mlp': depth must be >= 1, got {depth}")
        self.input = single_stream(inputs, "a projector")
        layers: list[nn.Module] = [nn.LayerNorm(self.input.dim, eps=layernorm_eps)] if layernorm else []
        layers.append(nn.Linear(self.input.dim, d_llm))
        for _ in range(depth - 1):
            layers += [nn.GELU(), nn.Linear(d_llm, d_llm)]
        self.proj = nn.Sequential(*layers)
        self.d_llm = d_llm

    def output_specs(self) -> list[StreamSpec]:
        s = self.input
        return [StreamSpec(self.component_name or "mlp", self.d_llm, s.num_tokens, s.grid, s.view, s.maps)]

    def forward(self, streams: list[VisualFeatures], context: VisualContext) -> list[VisualFeatures]:
        f = streams[0]
        w = self.proj[-1].weight
        return [VisualFeatures(self.proj(f.tokens.to(w.dtype)), f.grid, f.maps)]


class LinearProjector(MLPProjector):
    def __init__(self, inputs: Sequence[StreamSpec], d_llm: int):
        super().__init__(inputs, d_llm, depth=1)


class IdentityProjector(Connector):
    """Pass-through for encoders whose width already equals the LLM's."""

    def __init__(self, inputs: Sequence[StreamSpec], d_llm: int):
        super().__init__()
        self.input = single_stream(inputs, "identity")

    def output_specs(self) -> list[StreamSpec]:
        return [self.input]

    def forward(self, streams: list[VisualFeatures], context: VisualContext) -> list[VisualFeatures]:
        return streams


def _fixed_depth(n: int):
    class _MLP(MLPProjector):
        __doc__ = f"LLaVA ``mlp{n}x_gelu``: Linear, then {n - 1} x (GELU, Linear)."

        def __init__(self, inputs: Sequence[StreamSpec], d_llm: int, layernorm: bool = False):
            super().__init__(inputs, d_llm, depth=n, layernorm=layernorm)

    _MLP.__name__ = _MLP.__qualname__ = f"MLP{n}xGELU"
    return _MLP


mlp2x_gelu = _fixed_depth(2)
mlp3x_gelu = _fixed_depth(3)
mlp4x_gelu = _fixed_depth(4)


class ln_mlp2x_gelu(MLPProjector):  # noqa: N801 - registry name style
    """ViP-LLaVA's projector: LayerNorm(C, eps 1e-5), then Linear, GELU, Linear (for multi-layer CLIP)."""

    def __init__(self, inputs: Sequence[StreamSpec], d_llm: int, layernorm_eps: float = 1e-5):
        super().__init__(inputs, d_llm, depth=2, layernorm=True, layernorm_eps=layernorm_eps)


class FusedMLPProjector(MLPProjector):
    """Prismatic's ``fused-gelu-mlp`` (for channel-fused towers, e.g. DINOv2 + SigLIP): ``Linear(C, 4C)`` -> GELU ->
    ``Linear(4C, D)`` -> GELU -> ``Linear(D, D)``, PyTorch default init."""

    def __init__(self, inputs: Sequence[StreamSpec], d_llm: int, expansion: int = 4):
        super().__init__(inputs, d_llm, depth=1)
        if expansion < 1:
            raise ConfigError(f"connector 'fused-gelu-mlp': expansion must be >= 1, got {expansion}")
        c = self.input.dim
        self.proj = nn.Sequential(nn.Linear(c, expansion * c), nn.GELU(), nn.Linear(expansion * c, d_llm), nn.GELU(),
                                  nn.Linear(d_llm, d_llm))
