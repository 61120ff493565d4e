"""Stage-two input pipeline: an epoch's batch plan (rows + flip bits) and a batch-level Dataset.

Each DataLoader item is a whole batch, so a worker decodes its images, flips them by the planned
flip bits (the only augmentation, as in insightface) and reads the matching cached teacher views in
one sorted read.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from common.errors import PipelineError
from models.preprocess import hflip
from readers.base import CorruptImageError


def flip_bits(seed: int, epoch: int, position: int, n: int) -> np.ndarray:
    """Deterministic random horizontal-flip bits for batch `position` of `epoch`: [n] uint8."""
    rng = np.random.default_rng([seed, epoch, position, 0x5F1B])
    return rng.integers(0, 2, size=n, dtype=np.uint8)


def rank_positions(batches: int, start: int, world: int, rank: int) -> list[int]:
    """The epoch-plan positions one rank of `world` trains on, from plan position `start` on.

    Step k of the rest of the epoch takes positions start + k x world .. + world - 1, one per rank, so
    the ranks share every step's batches and each batch (whole P x M groups) goes to one rank. The last
    step's ranks past the plan's end take its first batches again (as torch's `DistributedSampler`
    pads), so every row is seen at least once per epoch, exactly once when `world` divides `batches`.
    With one process: start, start + 1, ... (the plan itself).
    """
    return [(p + rank) % batches for p in range(start, batches, world)]


class EpochPlan(Sampler[tuple[np.ndarray, np.ndarray]]):
    """The batches of one epoch at `positions` of its plan, each as (dataset rows, flip bits)."""

    def __init__(self, batches: list[np.ndarray], seed: int, epoch: int, positions: list[int]) -> None:
        self.batches = batches
        self.seed = seed
        self.epoch = epoch
        self.positions = positions

    def __len__(self) -> int:
        return len(self.positions)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for position in self.positions:
            rows = self.batches[position]
            yield rows, flip_bits(self.seed, self.epoch, position, len(rows))


class TrainBatches(Dataset[dict[str, torch.Tensor]]):
    """Loads one planned batch: uint8 images [B,H,W,3] (flipped per bit), labels, rows, flips, targets."""

    def __init__(self, dataset: Any, cache: Any | None = None) -> None:
        self.dataset = dataset
        self.cache = cache

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[np.ndarray, np.ndarray]) -> dict[str, torch.Tensor]:
        rows, flips = item
        images = []
        for r, f in zip(rows.tolist(), flips.tolist(), strict=False):
            try:
                img = self.dataset.load(r)
            except CorruptImageError as e:
                raise PipelineError(f"unreadable training image at row {r}: {e}") from None
            images.append(hflip(img) if f else img)
        batch = {
            "images": torch.from_numpy(np.ascontiguousarray(np.stack(images))),
            "labels": torch.from_numpy(self.dataset.labels[rows].astype(np.int64)),
            "rows": torch.from_numpy(rows.astype(np.int64)),
            "flips": torch.from_numpy(flips.astype(np.int64)),
        }
        if self.cache is not None:
            batch["targets"] = torch.from_numpy(self.cache.targets(rows, flips))
        return batch
