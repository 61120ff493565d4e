"""The stage-two input pipeline: flip bits, the epoch plan and batch loading (flipped images, matching views)."""
from __future__ import annotations

import numpy as np
import torch

from models.preprocess import hflip
from readers.synthetic import SyntheticDataset
from stages.training.batches import EpochPlan, TrainBatches, flip_bits


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


def test_epoch_plan_starts_at_position_and_carries_the_bits() -> None:
    batches = [np.arange(i * 4, i * 4 + 4) for i in range(5)]
    items = list(EpochPlan(batches, seed=7, epoch=2, start=3))
    assert len(EpochPlan(batches, 7, 2, 3)) == 2 == len(items)
    for (rows, flips), position in zip(items, (3, 4), strict=True):
        assert np.array_equal(rows, batches[position])
        assert np.array_equal(flips, flip_bits(7, 2, position, 4))


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
