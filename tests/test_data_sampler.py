"""Length- and modality-grouped sampling (LLaVA semantics, components.md §0.7), seeded for exact resume."""

from __future__ import annotations

import random

import pytest
import torch
from torch.utils.data import DataLoader

from vlmkit.errors import ConfigError
from vlmkit_data.sampler import LengthGroupedSampler, balanced_chunks


def _random_lengths(n: int, seed: int, text_share: float = 0.3) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(1, 500) * (-1 if rng.random() < text_share else 1) for _ in range(n)]


def test_balanced_chunks_by_hand():
    lengths = [10, 9, 8, 7, 3, 1]
    # 10->c0, 9->c1, 8->c1 (9<10), 7->c0 (10<17), 3->c0 (17=17, lowest chunk first; c0 full), 1->c1
    assert balanced_chunks([0, 1, 2, 3, 4, 5], lengths, 2) == [[0, 3, 4], [1, 2, 5]]
    # counts that do not divide: round-robin
    assert balanced_chunks([0, 1, 2, 3, 4], lengths, 2) == [[0, 2, 4], [1, 3]]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("batch_size, world_size", [(4, 1), (3, 2), (2, 4)])
def test_megabatches_never_mix_modalities_except_the_last(seed, batch_size, world_size):
    lengths = _random_lengths(random.Random(seed).randint(40, 120), seed)
    sampler = LengthGroupedSampler(lengths, batch_size, world_size, group_by_modality=True, seed=seed)
    order = list(sampler)
    assert sorted(order) == list(range(len(lengths)))  # a permutation: nothing dropped or repeated
    mega = batch_size * world_size
    n_image = sum(n > 0 for n in lengths)
    n_text = len(lengths) - n_image
    # the mixed leftover is the last megabatch of each modality, merged, and placed at the end
    leftover = (n_image % mega or mega) + (n_text % mega or mega)
    head, tail = order[:-leftover], order[-leftover:]
    assert len(head) % mega == 0
    for s in range(0, len(head), mega):
        signs = {lengths[i] > 0 for i in head[s:s + mega]}
        assert len(signs) == 1, f"megabatch {s // mega} mixes image and text-only samples"
        for b in range(s, s + mega, batch_size):  # each rank's batch is sorted longest first
            batch = [abs(lengths[i]) for i in head[b:b + batch_size]]
            assert batch == sorted(batch, reverse=True)
    assert tail == sorted(tail)
    assert {lengths[i] > 0 for i in tail} == {True, False}


def test_balance_across_ranks_in_a_megabatch():
    lengths = _random_lengths(256, 7, text_share=0.0)
    order = list(LengthGroupedSampler(lengths, batch_size=8, world_size=4, seed=1))
    for s in range(0, len(order), 32):
        sums = [sum(lengths[i] for i in order[b:b + 8]) for b in range(s, s + 32, 8)]
        biggest = max(lengths[i] for i in order[s:s + 32])
        assert max(sums) - min(sums) <= biggest  # greedy balancing keeps ranks within one sample


def test_seeded_and_resumable():
    lengths = _random_lengths(97, 3)
    a = LengthGroupedSampler(lengths, 4, 2, group_by_modality=True, seed=11)
    b = LengthGroupedSampler(lengths, 4, 2, group_by_modality=True, seed=11)
    torch.manual_seed(0)
    first = list(a)
    torch.manual_seed(123)  # the global RNG must not matter
    assert list(b) == first
    a.set_epoch(1)
    second = list(a)
    assert second != first
    resumed = LengthGroupedSampler(lengths, 4, 2, group_by_modality=True, seed=11)
    resumed.set_epoch(1)
    assert list(resumed) == second
    assert list(LengthGroupedSampler(lengths, 4, 2, group_by_modality=True, seed=12)) != first


def test_single_modality_is_plain_length_grouping_and_zero_is_refused():
    lengths = [-n for n in range(1, 41)]  # all text-only
    order = list(LengthGroupedSampler(lengths, 5, 2, group_by_modality=True))
    assert sorted(order) == list(range(40))
    for s in range(0, 40, 5):
        batch = [abs(lengths[i]) for i in order[s:s + 5]]
        assert batch == sorted(batch, reverse=True)
    with pytest.raises(ConfigError, match="index 2"):
        list(LengthGroupedSampler([3, -1, 0, 4], 2, group_by_modality=True))
    with pytest.raises(ConfigError):
        LengthGroupedSampler([1, 2], batch_size=0)


def test_works_as_a_dataloader_sampler():
    lengths = _random_lengths(30, 5)
    data = [(i, abs(n)) for i, n in enumerate(lengths)]
    sampler = LengthGroupedSampler(lengths, batch_size=5, seed=2)
    batches = [b[0].tolist() for b in DataLoader(data, batch_size=5, sampler=sampler)]
    assert len(sampler) == 30 and [i for b in batches for i in b] == list(sampler)


def test_plain_length_sampler_is_transformers_length_grouping():
    """``sampler: length`` is the Trainer's group_by_length order: every index once, the longest sample
    in the first batch, the same order for the same seed; the modality sign is ignored."""
    from transformers.trainer_pt_utils import LengthGroupedSampler as TrainerLengthGroupedSampler

    from vlmkit_data.samplers import length_sampler

    class Lengths:
        def __init__(self, lengths):
            self.lengths = lengths

        def modality_lengths(self):
            return self.lengths

    lengths = [5, -40, 12, 7, -3, 90, 20, 8, -11, 30, 2, 16]
    a = length_sampler(Lengths(lengths), batch_size=2, world_size=2, seed=3)
    assert isinstance(a, TrainerLengthGroupedSampler)
    order = list(a)
    assert sorted(order) == list(range(len(lengths)))
    assert 5 in order[:4]  # length 90: the longest goes into the first (global) batch
    assert list(length_sampler(Lengths(lengths), batch_size=2, world_size=2, seed=3)) == order
    flipped = [-n for n in lengths]
    assert list(length_sampler(Lengths(flipped), batch_size=2, world_size=2, seed=3)) == order
