"""`readers.face_size`: stored images that are not aligned crops of the model's side are named, with the fix."""
from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from readers import FolderDataset
from readers.face_size import face_size_warning, header_size, sample_sizes, warn_face_size


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_header_size_reads_width_and_height() -> None:
    assert header_size(_png(250, 200)) == (250, 200)
    assert header_size(b"not an image") is None


def test_sample_sizes_spreads_over_the_rows_and_skips_unreadable() -> None:
    blobs = [_png(112, 112)] * 50 + [b"junk"] + [_png(250, 250)] * 49
    asked: list[int] = []

    def encoded(i: int) -> bytes:
        asked.append(i)
        return blobs[i]

    sizes = sample_sizes(len(blobs), encoded, sample=16)
    assert asked[0] == 0 and asked[-1] == 99 and len(asked) == 16
    assert (112, 112) in sizes and (250, 250) in sizes


def test_no_warning_for_crops_of_the_models_side() -> None:
    assert face_size_warning("set", [(112, 112)] * 8, 112) is None
    assert face_size_warning("set", [], 112) is None


@pytest.mark.parametrize("sizes, words", [([(250, 250)] * 8, "not 112 x 112"),
                                          ([(112, 112)] * 6 + [(120, 90)] * 2, "not square")])
def test_a_warning_names_the_size_and_the_fix(sizes: list[tuple[int, int]], words: str) -> None:
    text = face_size_warning("folder data set 'x'", sizes, 112)
    assert text is not None and words in text and "folder data set 'x'" in text
    assert "aligned" in text and "icdface convert" in text


def test_warn_face_size_on_a_folder_of_photos(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for person in ("a", "b"):
        (tmp_path / person).mkdir()
        for k in range(2):
            (tmp_path / person / f"{k}.png").write_bytes(_png(250, 250))
    data = FolderDataset(tmp_path, 112)
    with caplog.at_level(logging.WARNING):
        assert warn_face_size(data, 112) is not None
    assert "250 x 250" in caplog.text
    assert warn_face_size(data, 250) is None
