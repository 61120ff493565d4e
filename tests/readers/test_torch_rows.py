"""`readers.torch_rows`: ImageRows marks corrupt rows and collates in a DataLoader."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
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
    img, label, row, ok = rows[1]
    assert (label, row, ok) == (0, 1, False) and img.dtype == torch.uint8 and not img.any()
    batch = next(iter(DataLoader(ImageRows(ds), batch_size=3)))
    images, labels, rows_t, oks = batch
    assert images.shape == (3, 16, 16, 3) and images.dtype == torch.uint8
    assert labels.tolist() == [0, 0, 1] and rows_t.tolist() == [0, 1, 2] and oks.tolist() == [True, False, True]
    assert ds.keys[int(rows_t[~oks][0])] == "a/2.png"


def test_image_rows_logs_why_a_row_failed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _save(tmp_path / "a" / "1.png", _image(1))
    (tmp_path / "a" / "2.png").write_bytes(b"broken")
    rows = ImageRows(FolderDataset(tmp_path, 16))
    with caplog.at_level(logging.WARNING, logger="readers.torch_rows"):
        assert rows[1][3] is False
    assert "row 1" in caplog.text and "'a/2.png': not an image" in caplog.text
