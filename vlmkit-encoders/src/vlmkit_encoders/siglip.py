"""SigLIP vision tower (transformers ``SiglipVisionModel``): hidden-layer patch tokens (no CLS).

SigLIP-so400m/14 at 384 px gives a 27x27 grid (the 6 px left over are dropped by the patch conv),
729 tokens of width 1152. The default feature layer is -2, the output of the second-to-last block,
as LLaVA-style towers (Ross) select it. Pixels are normalised with mean = std = 0.5.
The attention-pooling head is never built: its output is not a token feature.
"""

from __future__ import annotations

from typing import Any

from vlmkit.errors import ConfigError
from vlmkit.model.contracts import BuildOptions, ImageView

from .vit_tower import ViTEncoder

SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)

SIGLIP_CONFIGS: dict[str, dict[str, Any]] = {
    "so400m-384": dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                       image_size=384, patch_size=14, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6),
    "base-224": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                     image_size=224, patch_size=16, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                 image_size=56, patch_size=14, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6),
}
_ARCH_KEYS = tuple(SIGLIP_CONFIGS["tiny"]) + ("num_channels",)


def _without_head(model):
    """Drop the pooling head if this transformers built it anyway (before 5.23 ``from_pretrained`` ignores the
    config's ``vision_use_head``): the encoder never uses it, and its weights must not enter checkpoints."""
    vision = getattr(model, "vision_model", model)  # the head sits on the model itself in transformers 5
    if getattr(vision, "use_head", False):
        vision.use_head = False
        del vision.head
    return model


def build_siglip_vision(path: str | None, config: str | dict | None, pretrained: bool = True):
    """A SiglipVisionModel without its pooling head, from weights (path) or a named/explicit config."""
    from transformers import SiglipVisionConfig, SiglipVisionModel

    if path is not None:
        try:
            # the head switch goes through the config: every transformers 5 release reads it there
            hf_config = SiglipVisionConfig.from_pretrained(path, vision_use_head=False)
            if pretrained:
                return _without_head(SiglipVisionModel.from_pretrained(path, config=hf_config))
        except OSError as exc:
            raise ConfigError(f"encoder 'siglip': cannot load '{path}': {str(exc).splitlines()[0]}") from exc
        return SiglipVisionModel(hf_config)
    if isinstance(config, str):
        if config not in SIGLIP_CONFIGS:
            raise ConfigError(f"encoder 'siglip': unknown config '{config}'; built-in: {', '.join(SIGLIP_CONFIGS)}")
        config = SIGLIP_CONFIGS[config]
    return SiglipVisionModel(SiglipVisionConfig(**{**(config or SIGLIP_CONFIGS["so400m-384"]),
                                                   "vision_use_head": False}))


class SigLIPEncoder(ViTEncoder):
    component_name = "siglip"

    def __init__(self, path: str | None = None, config: str | dict | None = None,
                 feature_layer: int | list[int] = -2, resize: str = "pad", view: str = "base",
                 image_size: int | None = None, build: BuildOptions = BuildOptions()):
        super().__init__()
        self.vision = build_siglip_vision(path, config if path is None else None, build.pretrained)
        layers = [feature_layer] if isinstance(feature_layer, int) else list(feature_layer)
        self._setup(layers, "patch")
        size = self.vision.config.image_size
        if image_size is not None and image_size != size:
            raise ConfigError(f"encoder 'siglip': image_size {image_size} differs from the model's {size}; "
                              "SigLIP position embeddings are fixed")
        self.view = ImageView(view, size, SIGLIP_MEAN, SIGLIP_STD, resize)
        self._args: dict[str, Any] = dict(feature_layer=feature_layer, resize=resize, view=view)

    def checkpoint_args(self, args: dict[str, Any]) -> dict[str, Any]:
        return {**self._args, "config": self.architecture_config(_ARCH_KEYS)}
