"""CLIP vision tower (transformers ``CLIPVisionModel``): hidden-layer patch tokens, no CLS.

Defaults follow LLaVA-1.5: CLIP-L/14 at 336 px, feature layer -2 (the output of layer 23 of 24),
576 tokens of width 1024. ``path`` loads real weights (a folder or hub id); ``config`` names a
built-in architecture ("large-336", "tiny") or gives a ``CLIPVisionConfig`` mapping.
``feature_layer`` may list several layers, concatenated on channels in the order given
(ViP-LLaVA's multi-layer feature, registered as ``clip-multilayer``).
"""

from __future__ import annotations

from typing import Any

from vlmkit.errors import ConfigError
from vlmkit.model.contracts import CLIP_MEAN, CLIP_STD, BuildOptions, ImageView

from .vit_tower import ViTEncoder

CLIP_CONFIGS: dict[str, dict[str, Any]] = {
    "large-336": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                      image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu"),
    "large-224": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                      image_size=224, patch_size=14, projection_dim=768, hidden_act="quick_gelu"),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                 image_size=56, patch_size=14, projection_dim=64, hidden_act="quick_gelu"),
}
#: config keys that rebuild the architecture in a checkpoint
_ARCH_KEYS = tuple(CLIP_CONFIGS["tiny"]) + ("layer_norm_eps", "num_channels")
#: ViP-LLaVA's layers: outputs of CLIP layers 23, 20, 17, 14 and 6 (1-based), in this order
VIP_LAYERS = (-2, -5, -8, -11, 6)


def build_clip_vision(path: str | None, config: str | dict | None, pretrained: bool = True):
    """A CLIPVisionModel from weights (path) or from a named/explicit config (no download); with
    ``pretrained`` False only the path's config is read."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    if path is not None:
        if pretrained:
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


class CLIPEncoder(ViTEncoder):
    """CLIP vision tower: patch tokens (no CLS) of one hidden layer, LLaVA-1.5's default (layer -2).

    ``config`` names a built-in architecture ("large-336", "large-224", "tiny") or gives a
    CLIPVisionConfig mapping; ``path`` loads real weights (a folder or hub id).
    """

    has_cls = True
    component_name = "clip"

    def __init__(self, path: str | None = None, config: str | dict | None = None,
                 feature_layer: int | list[int] = -2, select: str = "patch", resize: str = "pad",
                 view: str = "base", image_size: int | None = None, build: BuildOptions = BuildOptions()):
        super().__init__()
        self.vision = build_clip_vision(path, config if path is None else None, build.pretrained)
        layers = [feature_layer] if isinstance(feature_layer, int) else list(feature_layer)
        self._setup(layers, select)
        self.view = self._make_view(image_size, resize, view)
        self._args: dict[str, Any] = dict(feature_layer=feature_layer, select=select, resize=resize, view=view)

    def _make_view(self, image_size: int | None, resize: str, view: str) -> ImageView:
        size = self.vision.config.image_size
        if image_size is not None and image_size != size:
            raise ConfigError(f"encoder '{self.component_name}': image_size {image_size} differs from the model's "
                              f"{size}; CLIP position embeddings are fixed")
        return ImageView(view, size, CLIP_MEAN, CLIP_STD, resize)

    def input_modules(self):
        return [self.vision.embeddings, self.vision.pre_layrnorm]

    def embed(self, pixel_values):
        return self.vision.pre_layrnorm(self.vision.embeddings(pixel_values))

    def checkpoint_args(self, args: dict[str, Any]) -> dict[str, Any]:
        return {**self._args, "config": self.architecture_config(_ARCH_KEYS)}


class CLIPMultiLayerEncoder(CLIPEncoder):
    """ViP-LLaVA's ``clip_4layers_336``: patch tokens of several CLIP layers concatenated on channels.

    Paper size: CLIP-L/14-336 and layers [-2,-5,-8,-11,6] give (B, 576, 5120); pair it with the
    ``ln-mlp2x_gelu`` connector (LayerNorm over the 5120 channels, then the MLP).
    """

    component_name = "clip-multilayer"
    #: 12 layers, so that the default ViP layers exist on a tiny tower
    tiny_args = {"config": {**CLIP_CONFIGS["tiny"], "num_hidden_layers": 12, "hidden_size": 32,
                            "intermediate_size": 64, "image_size": 28}}

    def __init__(self, path: str | None = None, config: str | dict | None = None,
                 layers: list[int] | None = None, resize: str = "pad", view: str = "base",
                 image_size: int | None = None, build: BuildOptions = BuildOptions()):
        chosen = list(layers) if layers is not None else list(VIP_LAYERS)
        super().__init__(path, config, feature_layer=chosen, select="patch", resize=resize, view=view,
                         image_size=image_size, build=build)
        self._args = dict(layers=chosen, resize=resize, view=view)
