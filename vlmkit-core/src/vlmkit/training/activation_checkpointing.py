"""Activation checkpointing per part (a recipe's ``gradient_checkpointing``): keep fewer activations, recompute
them in the backward pass.

``gradient_checkpointing: true`` means the LLM and every trainable encoder; a list names the parts
(``llm``, ``encoders``, ``encoder.0`` / ``encoder.<name>``). The LLM uses transformers' own switch
(``activation_checkpointing_enable``); an encoder that wraps a transformers model (CLIP, SigLIP) or a timm
model uses that library's switch, and any other encoder is recomputed as a whole with
``torch.utils.checkpoint``. Non-reentrant checkpointing is used throughout: it needs no input that
requires grad, so frozen embeddings in front of a checkpointed block are fine.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Sequence

import torch
from torch import nn

log = logging.getLogger(__name__)

PARTS = ("llm", "encoders")
_KWARGS = {"use_reentrant": False}


def resolve_parts(value: bool | str | Sequence[str], model: Any) -> list[str]:
    """The recipe value -> canonical part names (``llm``, ``encoder.<i>``); ``true`` is the LLM and every encoder."""
    from vlmkit.model.selectors import select_components

    if value is False or value is None:
        return []
    if value is True:
        value = list(PARTS)
    if isinstance(value, str):
        value = [value]
    return list(select_components(model, value, PARTS, "gradient_checkpointing"))


def _enable_transformers(model: Any) -> None:
    """transformers >= 5 names it activation checkpointing; older versions gradient checkpointing."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=dict(_KWARGS))
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=dict(_KWARGS))


def _checkpointed_forward(forward: Any, *args: Any, **kwargs: Any) -> Any:
    if torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(forward, *args, **_KWARGS, **kwargs)
    return forward(*args, **kwargs)


def _enable_on_encoder(encoder: nn.Module) -> str:
    from transformers import PreTrainedModel

    for module in encoder.modules():
        if isinstance(module, PreTrainedModel) and module.supports_gradient_checkpointing:
            _enable_transformers(module)
            return "transformers"
    for module in encoder.modules():
        if hasattr(module, "set_grad_checkpointing") and module is not encoder:
            module.set_grad_checkpointing(True)  # the API timm models have
            return "set_grad_checkpointing"
    if not getattr(encoder, "_vlmkit_recompute", False):
        encoder.forward = functools.partial(_checkpointed_forward, encoder.forward)  # type: ignore[method-assign]
        encoder._vlmkit_recompute = True  # type: ignore[assignment]
    return "torch.utils.checkpoint"


def enable_gradient_checkpointing(model: Any, value: bool | str | Sequence[str]) -> dict[str, str]:
    """Switch recomputation on for the chosen parts; returns part -> mechanism (what was enabled)."""
    done: dict[str, str] = {}
    for part in resolve_parts(value, model):
        if part == "llm":
            _enable_transformers(model.llm.model)
            done["llm"] = "transformers"
            continue
        encoder = model.encoders[int(part.split(".")[1])]
        if not any(p.requires_grad for p in encoder.parameters()):
            log.info("gradient checkpointing: %s is frozen (runs without autograd); nothing to recompute", part)
            continue
        done[part] = _enable_on_encoder(encoder)
    return done
