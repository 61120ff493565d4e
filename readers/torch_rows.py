"""A torch `Dataset` view of selected rows of a `FaceDataset`, tolerant of corrupt images."""
from __future__ import annotations

import logging

import numpy as np
import torch
from torch.utils.data import Dataset

from readers.base import CorruptImageError, FaceDataset

log = logging.getLogger(__name__)


class ImageRows(Dataset):
    """Item i is (image uint8 [H, W, 3], label, row, ok) for row `rows[i]` (all rows when None).

    An undecodable image comes back as zeros with ok=False; `dataset.keys[row]` names it, and the
    reason (truncated, not an image, too large, ...) is logged as a warning when it is read, since
    the item itself carries only the flag.
    """

    def __init__(self, dataset: FaceDataset, rows: np.ndarray | None = None) -> None:
        self.dataset = dataset
        self.rows = (np.arange(len(dataset), dtype=np.int64) if rows is None
                     else np.asarray(rows, dtype=np.int64).reshape(-1))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int, bool]:
        row = int(self.rows[i])
        size = self.dataset.image_size
        try:
            image = torch.from_numpy(self.dataset.load(row))
            ok = True
        except CorruptImageError as e:
            log.warning("row %d: %s", row, e)
            image = torch.zeros((size, size, 3), dtype=torch.uint8)
            ok = False
        return image, int(self.dataset.labels[row]), row, ok
