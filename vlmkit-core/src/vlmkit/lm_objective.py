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
        # shift the labels, not the logits: slicing the logits would copy the (B, L, V) tensor
        targets = F.pad(labels.to(logits.device), (0, 1), value=IGNORE_INDEX)[:, 1:]
        flat_logits = logits.reshape(-1, logits.shape[-1]).float()
        n_items = batch.get("num_items_in_batch")
        if n_items is None:
            loss = F.cross_entropy(flat_logits, targets.reshape(-1), ignore_index=IGNORE_INDEX)
        else:
            loss = F.cross_entropy(flat_logits, targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")
            loss = loss / torch.as_tensor(n_items, device=loss.device, dtype=loss.dtype)
        return {"lm": loss}
