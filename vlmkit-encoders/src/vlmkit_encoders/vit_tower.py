"""Shared base for HF ViT towers (CLIP, SigLIP): selected hidden layers as patch-grid tokens.

Hidden states are numbered as transformers numbers them: index 0 is the input of layer 1 (after
CLIP's ``pre_layrnorm``), index k the output of layer k, negative indices count from the end. The
layers are run here one by one rather than through the HF forward so that (a) no layer past the
deepest selected one is computed (layer -2 skips the last layer) and (b) a frozen prefix of layers
runs under ``no_grad`` when only the tail of the tower trains (DenseFusion's "layers >= 12").
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from vlmkit.errors import ConfigError
from vlmkit.model.contracts import VisionEncoder, VisualFeatures

from .frozen_prefix import FrozenPrefixMixin, Stage, run_stages


class ViTEncoder(FrozenPrefixMixin, VisionEncoder):
    """Subclasses build ``self.vision`` (an HF vision model with ``embeddings`` and ``encoder.layers``)
    and call ``_setup``."""

    #: the HF model prepends a CLS token (CLIP) that ``select='patch'`` drops
    has_cls: bool = False
    component_name: str = "vit"

    vision: nn.Module

    def _setup(self, feature_layers: Sequence[int], select: str) -> None:
        cfg = self.vision.config
        n = cfg.num_hidden_layers
        if not feature_layers:
            raise ConfigError(f"encoder '{self.component_name}': give at least one feature layer")
        for layer in feature_layers:
            if not -(n + 1) <= layer <= n:
                raise ConfigError(f"encoder '{self.component_name}': feature layer {layer} out of range for a "
                                  f"{n}-layer tower (valid: {-(n + 1)}..{n})")
        valid_select = ("patch", "cls_patch") if self.has_cls else ("patch",)
        if select not in valid_select:
            raise ConfigError(f"encoder '{self.component_name}': select must be one of {', '.join(valid_select)}, "
                              f"got '{select}'")
        self.feature_layers = list(feature_layers)
        self.select = select
        self.patch = cfg.patch_size
        self.output_dim = cfg.hidden_size * len(self.feature_layers)

    # -- geometry ----------------------------------------------------------------------------
    def grid(self, height: int, width: int) -> tuple[int, int] | None:
        return (height // self.patch, width // self.patch) if self.select == "patch" else None

    def num_tokens(self, height: int, width: int) -> int:
        n = (height // self.patch) * (width // self.patch)
        return n + (1 if self.select == "cls_patch" else 0)

    # -- structure ---------------------------------------------------------------------------
    def input_modules(self) -> list[nn.Module]:
        """Modules applied before layer 1 (patch embedding, and CLIP's pre-LayerNorm)."""
        return [self.vision.embeddings]

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vision.embeddings(pixel_values)

    @property
    def layers(self) -> nn.ModuleList:
        return self.vision.encoder.layers

    def stage_modules(self) -> list[list[nn.Module]]:
        return [self.input_modules()] + [[layer] for layer in self.layers]

    def named_parts(self) -> dict[str, list[str]]:
        """``layers.N`` (0-based transformer blocks), ``embeddings`` and the remaining norms."""
        parts: dict[str, list[str]] = {}
        for n, _ in self.named_parameters():
            bits = n.split(".")
            if "layers" in bits:
                parts.setdefault(f"layers.{bits[bits.index('layers') + 1]}", []).append(n)
            elif "embeddings" in bits:
                parts.setdefault("embeddings", []).append(n)
            else:
                parts.setdefault(bits[-2] if len(bits) > 1 else n, []).append(n)
        return parts

    # -- compute -----------------------------------------------------------------------------
    def hidden_states(self, pixel_values: torch.Tensor, layers: Sequence[int] | None = None) -> tuple[torch.Tensor, ...]:
        """All hidden states (HF numbering), or only ``layers``, computing nothing deeper than needed."""
        n = len(self.layers)
        wanted = [i % (n + 1) for i in layers] if layers is not None else list(range(n + 1))
        depth = max(wanted)
        dtype = self.vision.embeddings.patch_embedding.weight.dtype
        stages: list[Stage] = [(self.embed, self.input_modules())]
        for layer in self.layers[:depth]:
            stages.append((lambda h, layer=layer: layer(h, None), [layer]))
        states = run_stages(stages, pixel_values.to(dtype))
        return tuple(states[i] for i in wanted) if layers is not None else tuple(states)

    def forward(self, pixel_values: torch.Tensor) -> VisualFeatures:
        selected = self.hidden_states(pixel_values, self.feature_layers)
        h = selected[0] if len(selected) == 1 else torch.cat(selected, dim=-1)
        if self.select == "patch":
            if self.has_cls:
                h = h[:, 1:]
            return VisualFeatures(h, (pixel_values.shape[-2] // self.patch, pixel_values.shape[-1] // self.patch))
        return VisualFeatures(h, None)

    # -- checkpoints -------------------------------------------------------------------------
    def architecture_config(self, keys: Sequence[str]) -> dict[str, Any]:
        cfg = self.vision.config.to_dict()
        return {k: cfg[k] for k in keys if k in cfg}
