"""Where stage two gets teacher targets: `CacheTargets`, the stage-one cache (`distill` never builds a
teacher). The `TargetProvider` protocol lets the exactness test and the online-teacher benchmark run
the same loop with a live teacher (`tests/helpers/online_targets.py`).
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch


class TargetProvider(Protocol):
    """Unit-norm teacher targets t = cache[n, f] for a batch and for arbitrary (row, flip) pairs."""

    embedding_size: int

    def batch_targets(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, D_t] float32 targets for the batch's rows and flip bits."""

    def lookup(self, rows: np.ndarray, flips: np.ndarray) -> torch.Tensor:
        """[n, D_t] targets for feature-bank entries, float32 or the cache's float16 (the caller converts them)."""


class CacheTargets:
    """Targets from the stage-one cache: batch targets arrive with the batch (read in the workers)."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache
        self.embedding_size = int(cache.embedding_dim)

    def batch_targets(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return batch["targets"]

    def lookup(self, rows: np.ndarray, flips: np.ndarray) -> torch.Tensor:
        """In the stored dtype: the caller converts them on the training device, not here on the host."""
        return torch.from_numpy(self.cache.targets(rows, flips, stored=True))
