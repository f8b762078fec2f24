"""The language-modelling objective: next-token cross-entropy on supervised positions, computed by
transformers' own causal-LM loss (``ForCausalLMLoss``, what ``model.loss_function`` is for Llama)."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from transformers.loss.loss_utils import ForCausalLMLoss

from vlmkit.model.contracts import IGNORE_INDEX, ModelOutput, Objective, ObjectiveContext


class LanguageModelingObjective(Objective):
    """Mean CE over supervised tokens. With ``num_items_in_batch`` (set by the Trainer under gradient
    accumulation) the sum is divided by the token count of the whole accumulated batch instead, so
    accumulation gives the same gradient as one big batch."""

    def __init__(self, context: ObjectiveContext):
        super().__init__()

    def forward(self, output: ModelOutput, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        logits = output.logits
        loss = ForCausalLMLoss(logits, output.labels.to(logits.device), vocab_size=logits.shape[-1],
                               num_items_in_batch=batch.get("num_items_in_batch"), ignore_index=IGNORE_INDEX)
        return {"lm": loss}
