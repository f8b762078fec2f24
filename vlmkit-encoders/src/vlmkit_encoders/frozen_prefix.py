"""Staged towers whose leading stages may be frozen while later ones train.

Recipes unfreeze the tail of a tower ("ConvNeXt stages >= 2", "CLIP layers >= 12"). The frozen head
of such a tower should cost nothing at backward time and add no noise at train time, so a staged
encoder runs it under ``no_grad`` and keeps it in eval mode (no stochastic depth or dropout in
frozen weights, which some originals left active). Fully frozen towers are handled by the model.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

#: one stage: the function to apply and the modules that own its parameters
Stage = tuple[Callable[[torch.Tensor], torch.Tensor], Sequence[nn.Module]]


def is_trainable(modules: Sequence[nn.Module]) -> bool:
    return any(p.requires_grad for m in modules for p in m.parameters())


def frozen_prefix_length(stages: Sequence[Sequence[nn.Module]]) -> int:
    """How many leading stages have no trainable parameter."""
    for i, modules in enumerate(stages):
        if is_trainable(modules):
            return i
    return len(stages)


def run_stages(stages: Sequence[Stage], x: torch.Tensor) -> list[torch.Tensor]:
    """Apply ``stages`` in order and return every stage's output.

    Stages before the first trainable one run under ``no_grad`` unless the input itself needs a
    gradient (then the caller wants gradients through the whole tower).
    """
    frozen = 0 if x.requires_grad else frozen_prefix_length([mods for _, mods in stages])
    grad_enabled = torch.is_grad_enabled()
    outputs = []
    for i, (fn, _) in enumerate(stages):
        with torch.set_grad_enabled(grad_enabled and i >= frozen):
            x = fn(x)
        outputs.append(x)
    return outputs


class FrozenPrefixMixin:
    """For ``nn.Module`` encoders made of stages: frozen leading stages stay in eval mode.

    Subclasses implement ``stage_modules()`` (the modules of each stage, in order).
    """

    def stage_modules(self) -> list[list[nn.Module]]:  # pragma: no cover - interface
        raise NotImplementedError

    def train(self, mode: bool = True):  # type: ignore[override]
        super().train(mode)  # type: ignore[misc]
        if mode:
            stages = self.stage_modules()
            for modules in stages[:frozen_prefix_length(stages)]:
                for m in modules:
                    m.eval()
        return self
