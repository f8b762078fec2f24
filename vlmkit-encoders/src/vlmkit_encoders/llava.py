"""HF Llava's CLIP vision tower <-> vlmkit's ``clip`` encoder (the ``vlmkit.interop.llava_conversion`` contract).

Returned by this package's ``vlmkit_llava_converters`` hook (``vlmkit_encoders.hooks``), so that
``vlmkit import-hf`` / ``export-hf`` convert LLaVA-1.5 checkpoints without core knowing about CLIP.

An HF Llava vision tower is a ``CLIPVisionModel`` read at one hidden layer (``vision_feature_layer``),
with (``full``) or without (``default``) the CLS token: the ``clip`` encoder with ``feature_layer`` and
``select`` ``cls_patch`` / ``patch``. Its weights keep their HF names; only the ``vision_model.`` level,
which ``CLIPVisionModel`` had before transformers 5, is dropped from the canonical name.
"""

from __future__ import annotations

from typing import Any

from vlmkit.errors import ConfigError
from vlmkit.interop.llava_conversion import LlavaVisionConversion
from vlmkit.model.config import ComponentConfig

#: HF Llava's vision_feature_select_strategy <-> the clip encoder's ``select``
_SELECT = {"default": "patch", "full": "cls_patch"}
_STRATEGY = {v: k for k, v in _SELECT.items()}


def _tower_rel(name: str) -> str:
    # CLIPVisionModel nested its weights under ``vision_model.`` before transformers 5
    return name.removeprefix("vision_model.")


def _feature_layer(enc: Any) -> int | None:
    """The encoder's single feature layer, or None when it reads several."""
    layers = getattr(enc, "feature_layers", None)
    if layers is None:
        layers = [getattr(enc, "feature_layer", None)]
    return layers[0] if len(layers) == 1 and isinstance(layers[0], int) else None


class CLIPLlavaVision(LlavaVisionConversion):
    components = ("clip",)
    model_types = ("clip_vision_model",)
    description = "the 'clip' encoder (one CLIP vision tower, one feature layer)"
    #: LLaVA-1.5, and LLaVA-NeXT's and OneVision's towers (the tiling is the model's, not the tower's)
    families = ("llava", "llava_next", "llava_onevision")

    # -- import ---------------------------------------------------------------------------------------
    def component_config(self, hf_config: Any) -> ComponentConfig:
        layer = hf_config.vision_feature_layer
        if not isinstance(layer, int):
            raise ConfigError(f"vision_feature_layer: a list of layers ({list(layer)}) is not supported by import-hf; "
                              "only a single layer maps to the 'clip' encoder")
        select = _SELECT.get(hf_config.vision_feature_select_strategy)
        if select is None:
            raise ConfigError(f"vision_feature_select_strategy: '{hf_config.vision_feature_select_strategy}' is not "
                              "'default' or 'full'")
        vision_args = {k: v for k, v in hf_config.vision_config.to_diff_dict().items()
                       if k not in ("transformers_version", "model_type")}
        return ComponentConfig("clip", {"config": vision_args, "feature_layer": layer, "select": select})

    # -- weights --------------------------------------------------------------------------------------
    def canonical_from_hf(self, name: str) -> str | None:
        return _tower_rel(name)

    def canonical_from_vlmkit(self, name: str) -> str | None:
        rest = name.removeprefix("vision.")
        return _tower_rel(rest) if rest != name else None

    # -- export ---------------------------------------------------------------------------------------
    def problems(self, component: Any) -> list[str]:
        vision = getattr(component, "vision", None)
        if vision is None:
            return ["has no CLIP vision tower (attribute 'vision')"]
        out = []
        if getattr(getattr(vision, "config", None), "model_type", None) not in self.model_types:
            out.append(f"vision tower is {type(vision).__name__}, not CLIPVisionModel")
        if _feature_layer(component) is None or getattr(component, "select", None) not in _STRATEGY:
            out.append("export-hf needs exactly one feature layer and select 'patch' or 'cls_patch'")
        return out

    def hf_config(self, component: Any) -> dict[str, Any]:
        return {"vision_config": component.vision.config.to_dict(),
                "vision_feature_layer": _feature_layer(component),
                "vision_feature_select_strategy": _STRATEGY[component.select]}

    def image_processor(self, component: Any) -> Any:
        from transformers import CLIPImageProcessor

        view = component.view
        return CLIPImageProcessor(size={"shortest_edge": view.size},
                                  crop_size={"height": view.size, "width": view.size},
                                  image_mean=list(view.mean), image_std=list(view.std))

    def processor_args(self, component: Any) -> dict[str, Any]:
        # the tower always makes a CLS token; HF's processor drops it from the count for "default"
        return {"patch_size": component.patch, "num_additional_image_tokens": 1}


class CLIPVipLlavaVision(CLIPLlavaVision):
    """transformers' VipLlava tower: CLIP read at several layers (``vision_feature_layers``), CLS dropped,
    concatenated on channels: the ``clip-multilayer`` encoder."""

    components = ("clip-multilayer",)
    families = ("vipllava",)
    description = "the 'clip-multilayer' encoder (one CLIP vision tower, several feature layers)"

    def component_config(self, hf_config: Any) -> ComponentConfig:
        layers = getattr(hf_config, "vision_feature_layers", None)
        if isinstance(layers, int):
            layers = [layers]
        if not layers or not all(isinstance(x, int) for x in layers):
            raise ConfigError(f"vision_feature_layers: {layers!r} is not a list of layer indices")
        vision_args = {k: v for k, v in hf_config.vision_config.to_diff_dict().items()
                       if k not in ("transformers_version", "model_type")}
        return ComponentConfig("clip-multilayer", {"config": vision_args, "layers": list(layers)})

    def problems(self, component: Any) -> list[str]:
        vision = getattr(component, "vision", None)
        if getattr(getattr(vision, "config", None), "model_type", None) not in self.model_types:
            return ["has no CLIP vision tower (attribute 'vision')"]
        if getattr(component, "select", None) != "patch":
            return ["VipLlava drops the CLS token (select 'patch')"]
        return []

    def hf_config(self, component: Any) -> dict[str, Any]:
        return {"vision_config": component.vision.config.to_dict(),
                "vision_feature_layers": list(component.feature_layers)}


class SigLIPLlavaVision(CLIPLlavaVision):
    """HF Llava-family SigLIP tower (LLaVA-OneVision's) <-> the ``siglip`` encoder. SigLIP has no CLS token,
    so only ``vision_feature_select_strategy: full`` keeps every patch (``default`` would drop one)."""

    components = ("siglip",)
    model_types = ("siglip_vision_model",)
    description = "the 'siglip' encoder (one SigLIP vision tower, one feature layer, strategy 'full')"

    def component_config(self, hf_config: Any) -> ComponentConfig:
        layer = hf_config.vision_feature_layer
        if not isinstance(layer, int):
            raise ConfigError(f"vision_feature_layer: a list of layers ({list(layer)}) is not supported; only a "
                              "single layer maps to the 'siglip' encoder")
        if hf_config.vision_feature_select_strategy != "full":
            raise ConfigError(f"vision_feature_select_strategy: '{hf_config.vision_feature_select_strategy}' drops "
                              "the first token, which in SigLIP is a patch (it has no CLS); only 'full' maps to "
                              "the 'siglip' encoder")
        vision_args = {k: v for k, v in hf_config.vision_config.to_diff_dict().items()
                       if k not in ("transformers_version", "model_type", "vision_use_head")}
        return ComponentConfig("siglip", {"config": vision_args, "feature_layer": layer})

    def problems(self, component: Any) -> list[str]:
        vision = getattr(component, "vision", None)
        if vision is None:
            return ["has no SigLIP vision tower (attribute 'vision')"]
        out = []
        if getattr(getattr(vision, "config", None), "model_type", None) not in self.model_types:
            out.append(f"vision tower is {type(vision).__name__}, not SiglipVisionModel")
        if _feature_layer(component) is None:
            out.append("export needs exactly one feature layer")
        return out

    def hf_config(self, component: Any) -> dict[str, Any]:
        return {"vision_config": {**component.vision.config.to_dict(), "vision_use_head": False},
                "vision_feature_layer": _feature_layer(component), "vision_feature_select_strategy": "full"}

    def image_processor(self, component: Any) -> Any:
        from transformers import SiglipImageProcessor

        view = component.view
        return SiglipImageProcessor(size={"height": view.size, "width": view.size},
                                    image_mean=list(view.mean), image_std=list(view.std))

    def processor_args(self, component: Any) -> dict[str, Any]:
        return {"patch_size": component.patch, "num_additional_image_tokens": 0}
