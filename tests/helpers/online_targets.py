"""Teacher targets computed by a live teacher at every step: the reference `CacheTargets` must equal.

Used by the cache-exactness test and by `bench/distill_step.py` (the online-teacher variant).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.preprocess import hflip


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
        images[flips.astype(bool)] = hflip(images[flips.astype(bool)])
        return self._embed(torch.from_numpy(np.ascontiguousarray(images)))
