"""Comparing sets of named tensors: which names are one tensor (tied weights), and what is missing or left
over between a model and some weights. Shared by vlmkit's checkpoints and the filling of foreign weights;
imports torch only.
"""

from __future__ import annotations

import torch


def mismatch(missing: list[str], unexpected: list[str], missing_as: str = "missing {n} tensor(s), e.g. {names}",
             unexpected_as: str = "unexpected {n} tensor(s), e.g. {names}") -> str:
    """What is missing and what is left over between a model and some weights, three names of each."""
    said = [form.format(n=len(names), names=", ".join(names[:3])) for form, names in
            ((missing_as, missing), (unexpected_as, unexpected)) if names]
    return "; ".join(said)


def storage_key(tensor: torch.Tensor) -> tuple[int, int, tuple[int, ...]]:
    """Equal for names of one tensor (tied weights: one storage, one offset, one shape)."""
    return tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape)
