"""A torch `Dataset` view of selected rows of a `FaceDataset`, tolerant of corrupt images."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from readers.base import CorruptImageError, FaceDataset


class ImageRows(Dataset):
    """Item i is (image uint8 [H, W, 3], label, row, ok, reason) for row `rows[i]` (all rows when None).

    An undecodable image comes back as zeros with ok=False and the reason it failed (truncated, not
    an image, too large, ...); `dataset.keys[row]` names it. reason is "" for a good image.
    """

    def __init__(self, dataset: FaceDataset, rows: np.ndarray | None = None) -> None:
        self.dataset = dataset
        self.rows = (np.arange(len(dataset), dtype=np.int64) if rows is None
                     else np.asarray(rows, dtype=np.int64).reshape(-1))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int, bool, str]:
        row = int(self.rows[i])
        size = self.dataset.image_size
        try:
            return torch.from_numpy(self.dataset.load(row)), int(self.dataset.labels[row]), row, True, ""
        except CorruptImageError as e:
            blank = torch.zeros((size, size, 3), dtype=torch.uint8)
            return blank, int(self.dataset.labels[row]), row, False, e.reason
