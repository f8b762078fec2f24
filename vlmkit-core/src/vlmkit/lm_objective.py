"""The language-modelling objective: next-token cross-entropy on supervised positions."""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

from .contracts import IGNORE_INDEX, ModelOutput, Objective, ObjectiveContext


class LanguageModelingObjective(Objective):
    """Mean CE over supervised tokens. With ``num_items_in_batch`` (set by the Trainer under gradient
    accumulation) the sum is divided by the token count of the whole accumulated batch instead, so
    accumulation gives the same gradient as one big batch."""

    def __init__(self, context: ObjectiveContext):
        super().__init__()

    def forward(self, output: ModelOutput, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        logits, labels = output.logits, output.labels
        shift_logits = logits[:, :-1].float()
        shift_labels = labels[:, 1:].to(logits.device)
        n_items = batch.get("num_items_in_batch")
        if n_items is None:
            loss = F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                                   ignore_index=IGNORE_INDEX)
        else:
            loss = F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                                   ignore_index=IGNORE_INDEX, reduction="sum")
            loss = loss / torch.as_tensor(n_items, device=loss.device, dtype=loss.dtype)
        return {"lm": loss}
