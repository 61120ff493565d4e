"""Where stage two gets teacher targets: the stage-one cache (always, in `distill`), or a live teacher.

The live provider exists for the exactness test and the online-teacher benchmark only; `distill`
never builds a teacher.
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F


class TargetProvider(Protocol):
    """Unit-norm teacher targets t = cache[n, f] for a batch and for arbitrary (row, flip) pairs."""

    embedding_size: int

    def batch_targets(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, D_t] float32 targets for the batch's rows and flip bits."""

    def lookup(self, rows: np.ndarray, flips: np.ndarray) -> torch.Tensor:
        """[n, D_t] float32 targets for feature-bank entries."""


class CacheTargets:
    """Targets from the stage-one cache: batch targets arrive with the batch (read in the workers)."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache
        self.embedding_size = int(cache.embedding_dim)

    def batch_targets(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return batch["targets"]

    def lookup(self, rows: np.ndarray, flips: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.cache.targets(rows, flips))


class OnlineTargets:
    """Targets computed by running the teacher on the batch images (and bank rows) at every step."""

    def __init__(self, teacher: Any, dataset: Any) -> None:
        self.teacher = teacher
        self.dataset = dataset
        self.embedding_size = int(teacher.embedding_size)

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.teacher.embed(images).float(), dim=-1)

    def batch_targets(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._embed(batch["images"])

    def lookup(self, rows: np.ndarray, flips: np.ndarray) -> torch.Tensor:
        if len(rows) == 0:
            return torch.zeros(0, self.embedding_size)
        images = np.stack([self.dataset.load(int(r)) for r in rows])
        images[flips.astype(bool)] = images[flips.astype(bool), :, ::-1]
        return self._embed(torch.from_numpy(np.ascontiguousarray(images)))
