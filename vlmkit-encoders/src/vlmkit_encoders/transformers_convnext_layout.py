"""The tensor names of transformers' ConvNeXt (``ConvNextModel``) and their names in vlmkit's ConvNeXt towers,
which are timm's modules.

Where the layout is met: a transformers ConvNeXt folder or hub id given as ``path`` (ConvLLaVA's released
tower is one), ConvLLaVA's checkpoint format in and out, and vlmkit checkpoints written before 0.2, whose
``convnext``/``convnext5`` tensors carry these names (read through ``legacy_state_name``). The mapping is one
table read both ways; the final ``layernorm`` of ``ConvNextModel`` serves only its pooled output and has no
place in a tower.
"""

from __future__ import annotations

import re

import torch

# (timm name, transformers name) with {s} stage, {b} block, {p} weight/bias; names relative to the trunk
# (transformers' stages sit under ``encoder.`` in a ConvNextModel)
_PAIRS = (
    ("stem.0.{p}", "embeddings.patch_embeddings.{p}"),
    ("stem.1.{p}", "embeddings.layernorm.{p}"),
    ("stages.{s}.downsample.0.{p}", "stages.{s}.downsampling_layer.0.{p}"),
    ("stages.{s}.downsample.1.{p}", "stages.{s}.downsampling_layer.1.{p}"),
    ("stages.{s}.blocks.{b}.conv_dw.{p}", "stages.{s}.layers.{b}.dwconv.{p}"),
    ("stages.{s}.blocks.{b}.norm.{p}", "stages.{s}.layers.{b}.layernorm.{p}"),
    ("stages.{s}.blocks.{b}.mlp.fc1.{p}", "stages.{s}.layers.{b}.pwconv1.{p}"),
    ("stages.{s}.blocks.{b}.mlp.fc2.{p}", "stages.{s}.layers.{b}.pwconv2.{p}"),
    ("stages.{s}.blocks.{b}.gamma", "stages.{s}.layers.{b}.layer_scale_parameter"),
)
_FIELDS = {"s": r"(?P<s>\d+)", "b": r"(?P<b>\d+)", "p": r"(?P<p>weight|bias)"}


def _pattern(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(template).replace(r"\{", "{").replace(r"\}", "}").format(**_FIELDS) + "$")


_TO_TIMM = tuple((_pattern(hf), timm) for timm, hf in _PAIRS)
_TO_HF = tuple((_pattern(timm), hf) for timm, hf in _PAIRS)


def _rename(name: str, table: tuple[tuple[re.Pattern[str], str], ...]) -> str | None:
    for pattern, template in table:
        m = pattern.match(name)
        if m:
            return template.format(**m.groupdict())
    return None


def from_transformers(name: str) -> str | None:
    """vlmkit's name for a ``ConvNextModel`` tensor (``encoder.`` prefix allowed); None for the final norm."""
    return _rename(name.removeprefix("encoder."), _TO_TIMM)


def to_transformers(name: str) -> str | None:
    """The ``ConvNextModel`` name (stages without the ``encoder.`` prefix) of a vlmkit tower tensor."""
    return _rename(name, _TO_HF)


def to_transformers_tensor(name: str, value: torch.Tensor) -> torch.Tensor:
    """transformers' blocks hold their MLP as Linear layers; a timm conv-MLP's 1x1 convolutions are flattened."""
    if (".mlp.fc1." in name or ".mlp.fc2." in name) and value.ndim == 4:
        return value.flatten(1)
    return value


def from_transformers_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ``ConvNextModel`` state dict in vlmkit's names; the final ``layernorm.*`` is left out."""
    out = {}
    for k, v in state.items():
        new = from_transformers(k)
        if new is not None:
            out[new] = v
    return out
