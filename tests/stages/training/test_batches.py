"""The stage-two input pipeline: flip bits, the epoch plan and batch loading (flipped images, matching views)."""
from __future__ import annotations

import numpy as np
import torch

from models.preprocess import hflip
from readers.synthetic import SyntheticDataset
from stages.training.batches import EpochPlan, TrainBatches, flip_bits, rank_positions


class ViewTable:
    """A stand-in for the cache: `targets(rows, flips)` = table[rows, flips]."""

    def __init__(self, n: int) -> None:
        self.table = np.random.default_rng(0).normal(size=(n, 2, 4)).astype(np.float32)

    def targets(self, rows: np.ndarray, flips: np.ndarray) -> np.ndarray:
        return self.table[rows, flips.astype(np.intp)]


def test_flip_bits_are_fair_and_deterministic() -> None:
    bits = flip_bits(3, 1, 5, 4000)
    assert bits.dtype == np.uint8 and set(np.unique(bits)) == {0, 1}
    assert 0.45 < bits.mean() < 0.55
    assert np.array_equal(bits, flip_bits(3, 1, 5, 4000))
    assert not np.array_equal(bits, flip_bits(3, 1, 6, 4000))
    assert not np.array_equal(bits, flip_bits(3, 2, 5, 4000))


def test_epoch_plan_yields_its_positions_and_carries_their_bits() -> None:
    batches = [np.arange(i * 4, i * 4 + 4) for i in range(5)]
    items = list(EpochPlan(batches, seed=7, epoch=2, positions=rank_positions(5, 3, 1, 0)))
    assert len(EpochPlan(batches, 7, 2, [3, 4])) == 2 == len(items)
    for (rows, flips), position in zip(items, (3, 4), strict=True):
        assert np.array_equal(rows, batches[position])
        assert np.array_equal(flips, flip_bits(7, 2, position, 4))


def test_ranks_share_each_step_and_cover_the_plan() -> None:
    assert rank_positions(6, 0, 1, 0) == list(range(6))
    assert rank_positions(6, 0, 2, 0) == [0, 2, 4] and rank_positions(6, 0, 2, 1) == [1, 3, 5]
    assert rank_positions(7, 0, 2, 1) == [1, 3, 5, 0]  # the last step's second rank wraps to batch 0
    assert rank_positions(7, 3, 3, 0) == [3, 6] and rank_positions(7, 3, 3, 2) == [5, 1]  # resumed at 3
    for world in (1, 2, 3, 4):
        taken = sorted(p for r in range(world) for p in rank_positions(12, 0, world, r))
        assert taken == list(range(12))  # world divides 12: each batch once


def test_batch_images_are_flipped_by_their_bit_and_targets_are_that_view() -> None:
    data = SyntheticDataset(4, 4, 16, seed=1, difficulty=1.0)
    cache = ViewTable(len(data))
    rows = np.arange(16)
    flips = flip_bits(0, 0, 0, 16)
    assert 0 < flips.sum() < 16
    batch = TrainBatches(data, cache)[(rows, flips)]
    for k, (r, f) in enumerate(zip(rows, flips, strict=True)):
        expected = hflip(data.load(int(r))) if f else data.load(int(r))
        assert np.array_equal(batch["images"][k].numpy(), expected), k
        assert np.array_equal(batch["targets"][k].numpy(), cache.table[r, f]), k
    assert torch.equal(batch["flips"], torch.from_numpy(flips.astype(np.int64)))
    assert torch.equal(batch["labels"], torch.from_numpy(data.labels[rows]))
