"""Sampler components (entry-point group ``vlmkit.samplers``) for training stages.

A recipe names one (``data: {sampler: modality-length}``); the trainer calls the factory with the
stage's dataset, per-device batch size, the number of batches that form one optimizer step across
processes and accumulation (LLaVA's ``world_size * grad_accum``) and the seed.
"""

from __future__ import annotations

from typing import Any

from vlmkit.errors import ConfigError

from .sampler import LengthGroupedSampler


def _lengths(dataset: Any) -> list[int]:
    if not hasattr(dataset, "modality_lengths"):
        raise ConfigError(f"{type(dataset).__name__} has no modality_lengths(); a length-grouped sampler needs it")
    return list(dataset.modality_lengths())


def modality_length_sampler(dataset: Any, batch_size: int, world_size: int = 1, seed: int = 0) -> LengthGroupedSampler:
    """LLaVA's ``group_by_modality_length``: length-grouped megabatches that never mix image and text-only."""
    return LengthGroupedSampler(_lengths(dataset), batch_size, world_size, group_by_modality=True, seed=seed)


def length_sampler(dataset: Any, batch_size: int, world_size: int = 1, seed: int = 0) -> Any:
    """Length-grouped batches, modality ignored: transformers' own ``LengthGroupedSampler`` (the Trainer's
    ``group_by_length``: megabatches of 50 steps sorted by length, the longest batch first), seeded."""
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler as TrainerLengthGroupedSampler

    lengths = [abs(n) for n in _lengths(dataset)]  # the sign only tells the modality, which is ignored here
    return TrainerLengthGroupedSampler(batch_size * world_size, lengths=lengths,
                                       generator=torch.Generator().manual_seed(seed))
