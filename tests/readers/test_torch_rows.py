"""`readers.torch_rows`: ImageRows marks corrupt rows and collates in a DataLoader."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from readers import FolderDataset
from readers.torch_rows import ImageRows
from tests.readers.test_base import _image
from tests.readers.test_folder import _save


def test_image_rows_marks_corrupt_rows_and_collates(tmp_path: Path) -> None:
    _save(tmp_path / "a" / "1.png", _image(1))
    (tmp_path / "a" / "2.png").write_bytes(b"broken")
    _save(tmp_path / "b" / "1.png", _image(2))
    ds = FolderDataset(tmp_path, 16)
    rows = ImageRows(ds, np.array([2, 1]))
    img, label, row, ok, reason = rows[1]
    assert (label, row, ok, reason) == (0, 1, False, "not an image (unknown or damaged format)")
    assert img.dtype == torch.uint8 and not img.any()
    batch = next(iter(DataLoader(ImageRows(ds), batch_size=3)))
    images, labels, rows_t, oks, reasons = batch
    assert images.shape == (3, 16, 16, 3) and images.dtype == torch.uint8
    assert labels.tolist() == [0, 0, 1] and rows_t.tolist() == [0, 1, 2] and oks.tolist() == [True, False, True]
    assert ds.keys[int(rows_t[~oks][0])] == "a/2.png" and reasons[0] == reasons[2] == ""


def test_image_rows_says_why_a_row_failed(tmp_path: Path) -> None:
    _save(tmp_path / "a" / "1.png", _image(1))
    (tmp_path / "a" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
    _, _, _, ok, reason = ImageRows(FolderDataset(tmp_path, 16))[1]
    assert ok is False and reason
