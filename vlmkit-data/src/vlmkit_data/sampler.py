"""Length-grouped sampling, with LLaVA's modality grouping.

Why: batches of similar length waste less padding, and (LLaVA-1.5 finetuning) batches that are all
image+text or all text-only keep the vision tower's work even across ranks.

The order is built from *megabatches* of ``world_size * batch_size`` indices: a random permutation is
cut into megabatches, each megabatch is sorted by length (longest first) and dealt into ``world_size``
chunks of equal count whose summed lengths are balanced greedily. With modality grouping, image and
text-only indices (positive and negative lengths) are grouped separately; the last, possibly partial,
megabatch of each modality is merged into one leftover megabatch placed at the very end, and every
other megabatch is shuffled. So no megabatch mixes modalities except that final one.

The sampler yields the *global* order (every rank sees the same list; the data loader shards it), as
LLaVA's trainer does. Unlike LLaVA, whose per-modality permutations use the global torch RNG, every
random choice here comes from one generator seeded with ``seed + epoch``, so a resumed run reproduces
the order exactly.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from vlmkit.errors import ConfigError


def balanced_chunks(indices: Sequence[int], lengths: Sequence[int], num_chunks: int) -> list[list[int]]:
    """Deal ``indices`` (longest first) into ``num_chunks`` chunks of equal count, balancing length sums.

    Each index goes to the chunk with the smallest summed length that still has room. When the count
    does not divide evenly, chunks are taken round-robin (equal counts are then impossible anyway).
    """
    if len(indices) % num_chunks:
        return [list(indices[k::num_chunks]) for k in range(num_chunks)]
    room = len(indices) // num_chunks
    chunks: list[list[int]] = [[] for _ in range(num_chunks)]
    sums = [0] * num_chunks
    open_chunks = list(range(num_chunks))
    for idx in indices:
        k = min(open_chunks, key=lambda c: (sums[c], c))
        chunks[k].append(idx)
        sums[k] += lengths[idx]
        if len(chunks[k]) == room:
            open_chunks.remove(k)
    return chunks


def length_grouped_indices(lengths: Sequence[int], batch_size: int, world_size: int,
                           generator: torch.Generator | None) -> list[int]:
    """Positions ``0..len(lengths)-1`` in megabatches: shuffled, sorted by length inside, balanced."""
    size = world_size * batch_size
    order = torch.randperm(len(lengths), generator=generator).tolist()
    out: list[int] = []
    for s in range(0, len(order), size):
        mega = sorted(order[s:s + size], key=lambda i: lengths[i], reverse=True)
        for chunk in balanced_chunks(mega, lengths, world_size):
            out.extend(chunk)
    return out


def modality_length_grouped_indices(lengths: Sequence[int], batch_size: int, world_size: int,
                                    generator: torch.Generator | None) -> list[int]:
    """LLaVA's modality grouping: positive lengths = with image, negative = text-only (0 is refused)."""
    for i, n in enumerate(lengths):
        if n == 0:
            raise ConfigError(f"modality length 0 at index {i}: cannot tell whether it has an image "
                              "(lengths are positive with an image, negative without)")
    image = [i for i, n in enumerate(lengths) if n > 0]
    text = [i for i, n in enumerate(lengths) if n < 0]
    if not image or not text:  # one modality: plain length grouping
        return length_grouped_indices([abs(n) for n in lengths], batch_size, world_size, generator)

    size = world_size * batch_size

    def megabatches(group: list[int]) -> list[list[int]]:
        group_lengths = [abs(lengths[i]) for i in group]
        ordered = [group[k] for k in length_grouped_indices(group_lengths, batch_size, world_size, generator)]
        return [ordered[s:s + size] for s in range(0, len(ordered), size)]

    image_mb, text_mb = megabatches(image), megabatches(text)
    leftover = image_mb.pop() + text_mb.pop()
    rest = image_mb + text_mb
    order = torch.randperm(len(rest), generator=generator).tolist()
    out = [i for k in order for i in rest[k]]
    out.extend(sorted(leftover))  # as LLaVA: the mixed leftover goes last, in index order
    return out


class LengthGroupedSampler(Sampler[int]):
    """A torch ``Sampler`` over ``range(len(lengths))`` grouped by length (and modality if asked).

    ``world_size`` is the number of batches that form one step across ranks and accumulation steps
    (LLaVA passes ``world_size * gradient_accumulation_steps``). Call ``set_epoch`` every epoch.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, world_size: int = 1, group_by_modality: bool = False,
                 seed: int = 0):
        if batch_size < 1 or world_size < 1:
            raise ConfigError(f"LengthGroupedSampler: batch_size and world_size must be >= 1, "
                              f"got {batch_size} and {world_size}")
        self.lengths = [int(n) for n in lengths]
        self.batch_size, self.world_size = batch_size, world_size
        self.group_by_modality, self.seed = group_by_modality, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def indices(self) -> list[int]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        if self.group_by_modality:
            return modality_length_grouped_indices(self.lengths, self.batch_size, self.world_size, g)
        return length_grouped_indices([abs(n) for n in self.lengths], self.batch_size, self.world_size, g)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())
