"""Filling a freshly built vlmkit model with the tensors of a foreign checkpoint, or failing by name.

Every importer does the same after it has built the model from the foreign config: map each foreign
tensor name to a vlmkit weight, check shapes, make sure every vlmkit weight is filled (tied weights
count once) and no foreign tensor is left over, then copy. Nothing is copied before everything has
been checked, so a failed import leaves no half-filled model behind.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vlmkit.errors import CheckpointError
from vlmkit.interop.weights import WeightFiles
from vlmkit.model.tensor_state import mismatch, storage_key
from vlmkit.progress import ProgressCallback

#: buffers some older checkpoints stored although they are recomputed from the config
RECOMPUTED_BUFFERS = (".position_ids", "rotary_emb.inv_freq")
#: foreign name -> vlmkit weight name (relative to the model), or None when it has no place
Rename = Callable[[str], "str | None"]


def storage_groups(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """Key -> group id; tied weights (one storage, several names) share a group."""
    ids: dict[tuple[int, int, tuple[int, ...]], int] = {}
    return {k: ids.setdefault(storage_key(v), len(ids)) for k, v in state.items()}


@dataclass
class Source:
    """One set of foreign weight files and how their names map. ``partial``: tensors with no place are
    skipped, not errors (a full CLIP folder from which only the vision tower is taken)."""

    files: WeightFiles
    rename: Rename
    partial: bool = False
    #: stored tensors the vlmkit model recomputes (fixed tables): neither copied nor left over
    skip: Callable[[str], bool] | None = None
    #: stored tensors that may be reshaped to a vlmkit weight of the same size (a 1x1 conv as a Linear)
    reshape: Callable[[str], bool] | None = None


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def fill_model(model: nn.Module, sources: Sequence[Source], *, origin: str | Path,
               progress: ProgressCallback | None = None, ignore: tuple[str, ...] = RECOMPUTED_BUFFERS,
               state: dict[str, torch.Tensor] | None = None) -> None:
    """Copy the tensors of ``sources`` into ``model`` (its ``persistent_state_dict`` unless ``state`` is given).

    Sources are in priority order: a weight filled by an earlier source is not read from a later one
    (a tower stored inside a checkpoint wins over the tower's own folder). Raises ``CheckpointError``,
    starting with ``origin``, for a wrong shape, a missing weight or a tensor with no place.
    """
    state = model.persistent_state_dict() if state is None else state  # type: ignore[operator]
    groups = storage_groups(state)
    plans: list[dict[str, str]] = []
    filled: set[int] = set()
    unexpected: list[str] = []
    for source in sources:
        plan: dict[str, str] = {}
        for key, (path, shape, _) in source.files.headers().items():
            if source.skip is not None and source.skip(key):
                continue
            target = source.rename(key)
            if target is None or target not in state:
                if not key.endswith(ignore) and not source.partial:
                    unexpected.append(key)
                continue
            if groups[target] in filled:
                continue  # an earlier source (or a tied name) already fills it
            same_size = state[target].numel() == _numel(shape) and source.reshape is not None and source.reshape(key)
            if tuple(state[target].shape) != shape and not same_size:
                raise CheckpointError(f"{path}: tensor '{key}' has shape {list(shape)}, but the model built from "
                                      f"config.json needs {list(state[target].shape)} for it")
            plan[key] = target
        filled |= {groups[t] for t in plan.values()}
        plans.append(plan)
    missing = sorted(k for k in state if groups[k] not in filled)
    if missing or unexpected:
        raise CheckpointError(f"{origin}: weights do not match config.json: " + mismatch(
            missing, sorted(unexpected), "missing {n} weight(s) for vlmkit's {names}",
            "{n} tensor(s) with no place in the model, e.g. {names}"))
    total, done = sum(len(p) for p in plans), 0
    with torch.no_grad():
        for source, plan in zip(sources, plans):
            for key, tensor in source.files.read(plan):
                target = state[plan[key]]
                target.copy_(tensor.reshape(target.shape))
                done += 1
                if progress is not None:
                    progress(done, total)
