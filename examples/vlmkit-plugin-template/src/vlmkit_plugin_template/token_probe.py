"""``template-probe``: an auxiliary objective that reads each image's projected visual tokens.

A small linear probe predicts the image's mean pixel colour (per view channel) from the mean of its
visual tokens, as they entered the LLM (``output.visual_tokens``): a cheap signal that the connector keeps
colour information. It shows the objective contract end to end:

* ``output.visual_tokens[k]`` and ``batch["pixel_values"][view][k]`` are the same image ``k`` (images in
  placeholder order, row by row), so no index bookkeeping is needed;
* the returned key (``probe``) names the log line ``loss/probe``;
* on a text-only batch it returns ``self.zero_loss()``, which keeps the probe in the graph.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from vlmkit.model.contracts import ModelOutput, Objective, ObjectiveContext


class TokenColourProbe(Objective):
    """Linear probe: mean visual token -> mean RGB of the image (MSE)."""

    tiny_args: dict[str, Any] = {}

    def __init__(self, context: ObjectiveContext, view: str | None = None):
        super().__init__()
        self.view = view or (context.visual.view.name if context.visual and context.visual.view else "base")
        self.head = nn.Linear(context.d_llm, 3)

    def forward(self, output: ModelOutput, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        pixels = (batch.get("pixel_values") or {}).get(self.view)
        if not output.visual_tokens or pixels is None:
            return {"probe": self.zero_loss()}
        pixels = pixels if isinstance(pixels, torch.Tensor) else torch.stack(list(pixels))
        tokens = torch.stack([t.mean(0) for t in output.visual_tokens]).to(self.head.weight.dtype)
        target = pixels.flatten(2).mean(-1).to(self.head.weight.dtype)  # (N, 3)
        return {"probe": (self.head(tokens) - target).pow(2).mean().float()}
