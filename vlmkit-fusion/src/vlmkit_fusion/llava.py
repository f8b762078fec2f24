"""HF Llava's ``LlavaMultiModalProjector`` <-> vlmkit's ``mlp2x_gelu`` connector (``vlmkit.interop.llava_conversion``).

Returned by this package's ``vlmkit_llava_converters`` hook (``vlmkit_fusion.hooks``), so that
``vlmkit import-hf`` / ``export-hf`` convert LLaVA-1.5 checkpoints without core knowing about projectors.

HF's projector is ``linear_1``, an activation (``projector_hidden_act``), ``linear_2``, with biases unless
``multimodal_projector_bias`` is false. ``mlp2x_gelu`` (and ``mlp`` at its default depth 2) is
``proj = Sequential(Linear, GELU(exact), Linear)`` with biases: ``proj.0`` is ``linear_1`` and ``proj.2``
is ``linear_2``.
"""

from __future__ import annotations

from typing import Any

from vlmkit.errors import ConfigError
from vlmkit.interop.llava_conversion import LlavaProjectorConversion
from vlmkit.model.config import ComponentConfig

#: vlmkit ``proj`` index <-> HF projector layer
_LAYERS = {"0": "linear_1", "2": "linear_2"}
_HF_LAYERS = set(_LAYERS.values())


class MLP2xGeluLlavaProjector(LlavaProjectorConversion):
    components = ("mlp2x_gelu", "mlp")
    description = "mlp2x_gelu (Linear, exact GELU, Linear, with biases)"
    families = ("llava", "llava_next", "llava_onevision")

    # -- import ---------------------------------------------------------------------------------------
    def component_config(self, hf_config: Any) -> ComponentConfig:
        if hf_config.projector_hidden_act != "gelu":
            raise ConfigError(f"projector_hidden_act: '{hf_config.projector_hidden_act}' is not 'gelu'; vlmkit's "
                              "mlp2x_gelu connector uses exact GELU")
        if not getattr(hf_config, "multimodal_projector_bias", True):
            raise ConfigError("multimodal_projector_bias: false; vlmkit's mlp2x_gelu connector has biases")
        return ComponentConfig("mlp2x_gelu")

    # -- weights --------------------------------------------------------------------------------------
    def canonical_from_hf(self, name: str) -> str | None:
        return name if name.partition(".")[0] in _HF_LAYERS else None

    def canonical_from_vlmkit(self, name: str) -> str | None:
        head, _, rest = name.partition(".")
        if head != "proj":
            return None
        idx, _, param = rest.partition(".")
        return f"{_LAYERS[idx]}.{param}" if idx in _LAYERS and param else None

    # -- export ---------------------------------------------------------------------------------------
    def problems(self, component: Any) -> list[str]:
        from torch import nn

        proj = getattr(component, "proj", None)
        ok = (isinstance(proj, nn.Sequential) and len(proj) == 3 and isinstance(proj[0], nn.Linear)
              and isinstance(proj[1], nn.GELU) and proj[1].approximate == "none" and isinstance(proj[2], nn.Linear)
              and proj[0].bias is not None and proj[2].bias is not None)
        return [] if ok else [f"HF Llava's projector is {self.description}"]

    def hf_config(self, component: Any) -> dict[str, Any]:
        return {"projector_hidden_act": "gelu", "multimodal_projector_bias": True}


#: vlmkit ``proj`` index <-> HF VipLlava projector layer
_VIP_LAYERS = {"0": "projector_layernorm", "1": "linear_1", "3": "linear_2"}


class LnMLPVipLlavaProjector(LlavaProjectorConversion):
    """transformers' ``VipLlavaMultiModalProjector`` (LayerNorm, Linear, GELU, Linear) <-> ``ln-mlp2x_gelu``."""

    components = ("ln-mlp2x_gelu",)
    families = ("vipllava",)
    description = "ln-mlp2x_gelu (LayerNorm, Linear, exact GELU, Linear)"

    def component_config(self, hf_config: Any) -> ComponentConfig:
        if hf_config.projector_hidden_act != "gelu":
            raise ConfigError(f"projector_hidden_act: '{hf_config.projector_hidden_act}' is not 'gelu'; vlmkit's "
                              "ln-mlp2x_gelu connector uses exact GELU")
        return ComponentConfig("ln-mlp2x_gelu", {"layernorm_eps": float(hf_config.projector_layernorm_eps)})

    def canonical_from_hf(self, name: str) -> str | None:
        return name if name.partition(".")[0] in set(_VIP_LAYERS.values()) else None

    def canonical_from_vlmkit(self, name: str) -> str | None:
        head, _, rest = name.partition(".")
        idx, _, param = rest.partition(".")
        return f"{_VIP_LAYERS[idx]}.{param}" if head == "proj" and idx in _VIP_LAYERS and param else None

    def problems(self, component: Any) -> list[str]:
        from torch import nn

        proj = getattr(component, "proj", None)
        ok = (isinstance(proj, nn.Sequential) and len(proj) == 4 and isinstance(proj[0], nn.LayerNorm)
              and isinstance(proj[1], nn.Linear) and isinstance(proj[2], nn.GELU) and proj[2].approximate == "none"
              and isinstance(proj[3], nn.Linear))
        return [] if ok else [f"HF VipLlava's projector is {self.description}"]

    def hf_config(self, component: Any) -> dict[str, Any]:
        return {"projector_hidden_act": "gelu", "projector_layernorm_eps": component.proj[0].eps}
