"""`readers.listfile`: list files, label remapping, errors naming the file and line."""
from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import ConfigError
from readers import CorruptImageError, ListDataset
from tests.readers.test_base import _image
from tests.readers.test_folder import _save


def test_list_dataset_paths_and_label_remap(tmp_path: Path) -> None:
    _save(tmp_path / "imgs" / "a.png", _image(1))
    _save(tmp_path / "imgs" / "with space.png", _image(2))
    _save(tmp_path / "elsewhere" / "c.png", _image(3))
    absolute = (tmp_path / "elsewhere" / "c.png").resolve()
    lst = tmp_path / "train.lst"
    lst.write_text(f"# comment\nimgs/a.png 10\n\nimgs/with space.png\t3\n{absolute} 10\n")
    ds = ListDataset(lst, 16)
    assert ds.keys == ["imgs/a.png", "imgs/with space.png", str(absolute)]
    assert ds.labels.tolist() == [1, 0, 1]
    assert ds.num_classes == 2
    assert ds.load(1).shape == (16, 16, 3)
    assert ds.describe()["format"] == "list"


@pytest.mark.parametrize(
    "body, message",
    [
        ("a.png 0\nb.png 1\nlonely\n", r"line 3"),
        ("a.png 0\nb.png one\n", r"line 2: label 'one' is not an integer"),
        ("a.png 0\na.png 1\n", r"line 2: 'a.png' already listed on line 1"),
        ("a.png 0\nb.png 99999999999999999999\n", r"line 2: label 99999999999999999999 is outside the 64-bit"),
    ],
)
def test_list_dataset_bad_line_names_file_and_line(tmp_path: Path, body: str, message: str) -> None:
    _save(tmp_path / "a.png", _image(1))
    lst = tmp_path / "bad.lst"
    lst.write_text(body)
    with pytest.raises(ConfigError, match=message) as info:
        ListDataset(lst, 16)
    assert str(lst) in str(info.value)


def test_list_dataset_wrong_base_folder_and_missing_file(tmp_path: Path) -> None:
    lst = tmp_path / "x.lst"
    lst.write_text("missing/a.png 0\n")
    with pytest.raises(ConfigError, match="line 1: image .* not found"):
        ListDataset(lst, 16)
    with pytest.raises(ConfigError, match="not found"):
        ListDataset(tmp_path / "none.lst", 16)


def test_list_dataset_not_utf8_names_file_line_and_offset(tmp_path: Path) -> None:
    _save(tmp_path / "a.png", _image(1))
    lst = tmp_path / "latin1.lst"
    lst.write_bytes("a.png 0\r\n# fine\ncaf\u00e9.png 1\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"line 3 \(byte offset 19\): not UTF-8") as info:
        ListDataset(lst, 16)
    assert str(lst) in str(info.value)


def test_list_dataset_utf8_names_and_bom(tmp_path: Path) -> None:
    _save(tmp_path / "caf\u00e9.png", _image(1))
    lst = tmp_path / "utf8.lst"
    lst.write_bytes("\ufeffcaf\u00e9.png 0\n".encode("utf-8"))
    assert ListDataset(lst, 16).keys == ["caf\u00e9.png"]


def test_list_dataset_refuses_images_over_the_pixel_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _save(tmp_path / "a.png", _image(1))
    lst = tmp_path / "train.lst"
    lst.write_text("a.png 0\n")
    ds = ListDataset(lst, 16)
    monkeypatch.setattr("readers.base.MAX_IMAGE_PIXELS", 24 * 24 - 1)
    with pytest.raises(CorruptImageError, match=r"'a\.png': too large: 24 x 24 pixels > 575"):
        ds.load(0)


def test_entries_that_are_not_regular_files_are_refused_not_read(tmp_path: Path) -> None:
    import os

    _save(tmp_path / "a.png", _image(1))
    os.mkfifo(tmp_path / "pipe.png")  # reading it would block for ever
    lst = tmp_path / "train.lst"
    lst.write_text("a.png 0\npipe.png 1\n/dev/zero 1\n")
    ds = ListDataset(lst, 16)
    for index in (1, 2):
        with pytest.raises(CorruptImageError, match="not a regular file"):
            ds.encoded(index)
