"""The LLaVA codebase's ``mm_projector`` <-> vlmkit's projector connectors (``vlmkit.interop.llava_repo``).

Returned by this package's ``vlmkit_llava_converters`` hook, so that ``vlmkit import`` / ``export`` read and
write checkpoints of the LLaVA codebase and its forks without core knowing about projectors.

* ``mm_projector_type`` ``linear`` (the codebase's default when the field is absent) is one
  ``Linear`` stored as ``model.mm_projector.{weight,bias}``: vlmkit's ``linear``.
* ``mlp{N}x_gelu`` is ``Sequential(Linear, GELU, Linear, ...)`` stored as ``model.mm_projector.{0,2,..}``:
  vlmkit's ``mlp{N}x_gelu`` (``mlp`` with ``depth: N``), ``proj`` holding the same layers.
* ViP-LLaVA builds ``SimpleFeatureSingleModel`` for ``mlp2x_gelu`` with its ``clip_4layers_336`` tower:
  ``clip_layernorm`` then ``final_linear`` (the MLP): vlmkit's ``ln-mlp2x_gelu``, whose ``proj`` is
  ``LayerNorm, Linear, GELU, Linear``.
"""

from __future__ import annotations

import re
from typing import Any

from vlmkit.interop.llava_conversion import RepoProjectorConversion
from vlmkit.model.config import ComponentConfig

_MLP = re.compile(r"^mlp(\d+)x_gelu$")
VIP_TOWER = "clip_4layers_336"
_FIXED_DEPTH = {2: "mlp2x_gelu", 3: "mlp3x_gelu", 4: "mlp4x_gelu"}


def _linears(component: Any) -> list[int] | None:
    """Indices in ``proj`` of the Linear layers, if ``proj`` is (LayerNorm?,) Linear (, GELU, Linear)*."""
    from torch import nn

    proj = getattr(component, "proj", None)
    if not isinstance(proj, nn.Sequential):
        return None
    start = 1 if len(proj) and isinstance(proj[0], nn.LayerNorm) else 0
    body = list(proj)[start:]
    if not body or len(body) % 2 == 0:
        return None
    for i, layer in enumerate(body):
        want = nn.Linear if i % 2 == 0 else nn.GELU
        if not isinstance(layer, want) or (want is nn.GELU and layer.approximate != "none"):
            return None
        if want is nn.Linear and layer.bias is None:
            return None
    return [start + i for i in range(0, len(body), 2)]


class MLPRepoProjector(RepoProjectorConversion):
    components = ("linear", "mlp", "mlp2x_gelu", "mlp3x_gelu", "mlp4x_gelu")
    variant = "LLaVA-1.5"
    detection = "mm_projector_type 'linear' (default) or 'mlp<N>x_gelu'"

    def claims(self, config: dict[str, Any]) -> bool:
        kind = config.get("mm_projector_type", "linear")
        return kind == "linear" or bool(_MLP.match(str(kind)))

    def component_config(self, config: dict[str, Any]) -> ComponentConfig:
        kind = config.get("mm_projector_type", "linear")
        if kind == "linear":
            return ComponentConfig("linear")
        depth = int(_MLP.match(kind).group(1))  # type: ignore[union-attr]
        return ComponentConfig(_FIXED_DEPTH[depth]) if depth in _FIXED_DEPTH else ComponentConfig("mlp", {"depth": depth})

    def checkpoint_name(self, name: str) -> str | None:
        head, _, param = name.partition(".")
        if head in ("weight", "bias") and not param:  # linear: the Linear itself
            return f"proj.0.{head}"
        return f"proj.{head}.{param}" if head.isdigit() and param else None

    def to_checkpoint_name(self, name: str, component: Any) -> str | None:
        parts = name.split(".")
        if len(parts) != 3 or parts[0] != "proj":
            return None
        single = len(_linears(component) or []) == 1
        return parts[2] if single else f"{parts[1]}.{parts[2]}"

    def problems(self, component: Any) -> list[str]:
        linears = _linears(component)
        if linears is None or linears[0] != 0:
            return ["the LLaVA codebase's projectors are Linear (, exact GELU, Linear)* with biases"]
        return []

    def repo_config(self, component: Any) -> dict[str, Any]:
        n = len(_linears(component) or [])
        return {"mm_projector_type": "linear" if n == 1 else f"mlp{n}x_gelu"}


class VipRepoProjector(RepoProjectorConversion):
    components = ("ln-mlp2x_gelu",)
    variant = "ViP-LLaVA"
    detection = "mm_projector_type 'mlp2x_gelu' with mm_vision_tower 'clip_4layers_336' (SimpleFeatureSingleModel)"
    priority = 10

    def claims(self, config: dict[str, Any]) -> bool:
        return config.get("mm_vision_tower") == VIP_TOWER and config.get("mm_projector_type") == "mlp2x_gelu"

    def component_config(self, config: dict[str, Any]) -> ComponentConfig:
        return ComponentConfig("ln-mlp2x_gelu")  # nn.LayerNorm's default eps, 1e-5, as the original

    def checkpoint_name(self, name: str) -> str | None:
        head, _, rest = name.partition(".")
        if head == "clip_layernorm" and rest in ("weight", "bias"):
            return f"proj.0.{rest}"
        if head == "final_linear":
            idx, _, param = rest.partition(".")
            return f"proj.{int(idx) + 1}.{param}" if idx in ("0", "2") and param in ("weight", "bias") else None
        return None

    def to_checkpoint_name(self, name: str, component: Any) -> str | None:
        parts = name.split(".")
        if len(parts) != 3 or parts[0] != "proj":
            return None
        if parts[1] == "0":
            return f"clip_layernorm.{parts[2]}"
        return f"final_linear.{int(parts[1]) - 1}.{parts[2]}" if parts[1] in ("1", "3") else None

    def problems(self, component: Any) -> list[str]:
        from torch import nn

        linears = _linears(component)
        proj = getattr(component, "proj", None)
        if linears != [1, 3] or not isinstance(proj[0], nn.LayerNorm) or abs(proj[0].eps - 1e-5) > 1e-12:
            return ["ViP-LLaVA's projector is LayerNorm (eps 1e-5), Linear, exact GELU, Linear"]
        return []

    def repo_config(self, component: Any) -> dict[str, Any]:
        return {"mm_projector_type": "mlp2x_gelu"}
