"""CLIP vision tower (transformers ``CLIPVisionModel``): one hidden layer's patch tokens, no CLS.

Defaults follow LLaVA-1.5: CLIP-L/14 at 336 px, feature layer -2 (the output of layer 23 of 24),
576 tokens of width 1024. ``path`` loads real weights (a folder or hub id); ``config`` names a
built-in architecture ("large-336", "tiny") or gives a ``CLIPVisionConfig`` mapping.
"""

from __future__ import annotations

from typing import Any

import torch

from vlmkit.build_context import load_pretrained
from vlmkit.contracts import CLIP_MEAN, CLIP_STD, ImageView, VisionEncoder, VisualFeatures
from vlmkit.errors import ConfigError

CLIP_CONFIGS: dict[str, dict[str, Any]] = {
    "large-336": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                      image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu"),
    "large-224": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                      image_size=224, patch_size=14, projection_dim=768, hidden_act="quick_gelu"),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                 image_size=56, patch_size=14, projection_dim=64, hidden_act="quick_gelu"),
}


def build_clip_vision(path: str | None, config: str | dict | None):
    """A CLIPVisionModel from weights (path) or from a named/explicit config (no download)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    if path is not None:
        if load_pretrained():
            try:
                return CLIPVisionModel.from_pretrained(path)
            except OSError as exc:
                raise ConfigError(f"encoder 'clip': cannot load '{path}': {str(exc).splitlines()[0]}") from exc
        return CLIPVisionModel(CLIPVisionConfig.from_pretrained(path))
    if isinstance(config, str):
        if config not in CLIP_CONFIGS:
            raise ConfigError(f"encoder 'clip': unknown config '{config}'; built-in: {', '.join(CLIP_CONFIGS)}")
        config = CLIP_CONFIGS[config]
    return CLIPVisionModel(CLIPVisionConfig(**(config or CLIP_CONFIGS["large-336"])))


class CLIPEncoder(VisionEncoder):
    def __init__(self, path: str | None = None, config: str | dict | None = None, feature_layer: int = -2,
                 select: str = "patch", resize: str = "pad", view: str = "base", image_size: int | None = None):
        super().__init__()
        if select not in ("patch", "cls_patch"):
            raise ConfigError(f"encoder 'clip': select must be 'patch' or 'cls_patch', got '{select}'")
        self.vision = build_clip_vision(path, config if path is None else None)
        cfg = self.vision.config
        if image_size is not None and image_size != cfg.image_size:
            raise ConfigError(f"encoder 'clip': image_size {image_size} differs from the model's {cfg.image_size}; "
                              "CLIP position embeddings are fixed")
        n_layers = cfg.num_hidden_layers
        if not -(n_layers + 1) <= feature_layer <= n_layers:
            raise ConfigError(f"encoder 'clip': feature_layer {feature_layer} out of range for {n_layers} layers")
        self.feature_layer = feature_layer
        self.select = select
        self.output_dim = cfg.hidden_size
        self.patch = cfg.patch_size
        self.view = ImageView(view, cfg.image_size, CLIP_MEAN, CLIP_STD, resize)
        self._args = dict(feature_layer=feature_layer, select=select, resize=resize, view=view)

    def grid(self, height: int, width: int) -> tuple[int, int] | None:
        return (height // self.patch, width // self.patch) if self.select == "patch" else None

    def num_tokens(self, height: int, width: int) -> int:
        n = (height // self.patch) * (width // self.patch)
        return n + (1 if self.select == "cls_patch" else 0)

    def named_parts(self) -> dict[str, list[str]]:
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

    def checkpoint_args(self, args: dict[str, Any]) -> dict[str, Any]:
        cfg = self.vision.config.to_dict()
        keep = {k: cfg[k] for k in CLIP_CONFIGS["tiny"] if k in cfg}
        keep.update({k: cfg[k] for k in ("layer_norm_eps", "num_channels") if k in cfg})
        return {**self._args, "config": keep}

    def hidden_states(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        dtype = next(self.vision.parameters()).dtype
        out = self.vision(pixel_values.to(dtype), output_hidden_states=True)
        return out.hidden_states

    def forward(self, pixel_values: torch.Tensor) -> VisualFeatures:
        h = self.hidden_states(pixel_values)[self.feature_layer]
        if self.select == "patch":
            h = h[:, 1:]
            g = (pixel_values.shape[-2] // self.patch, pixel_values.shape[-1] // self.patch)
            return VisualFeatures(h, g)
        return VisualFeatures(h, None)
