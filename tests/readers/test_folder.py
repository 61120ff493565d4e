"""`readers.folder`: identity folders, labels, listing hash, corrupt and empty data sets."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.errors import ConfigError
from readers import CorruptImageError, FolderDataset
from tests.readers.test_base import _image


def _save(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


def test_folder_dataset_labels_follow_sorted_identity_names(tmp_path: Path) -> None:
    _save(tmp_path / "bob" / "2.png", _image(1))
    _save(tmp_path / "bob" / "1.jpg", _image(2))
    _save(tmp_path / "alice" / "z.bmp", _image(3))
    _save(tmp_path / "carol" / "a.jpeg", _image(4))
    (tmp_path / "empty").mkdir()
    (tmp_path / ".hidden").mkdir()
    _save(tmp_path / ".hidden" / "x.png", _image(5))
    (tmp_path / "bob" / "notes.txt").write_text("ignored")
    (tmp_path / "pairs.txt").write_text("ignored")

    ds = FolderDataset(tmp_path, 16)
    assert ds.keys == ["alice/z.bmp", "bob/1.jpg", "bob/2.png", "carol/a.jpeg"]
    assert ds.labels.tolist() == [0, 1, 1, 2]
    assert ds.labels.dtype == np.int64
    assert ds.num_classes == 3 and len(ds) == 4
    img = ds.load(2)
    assert img.shape == (16, 16, 3) and img.dtype == np.uint8
    expected = np.asarray(Image.fromarray(_image(1)).resize((16, 16), Image.Resampling.BILINEAR))
    assert np.array_equal(img, expected)

    listing = "".join(f"{k}\t{v}\n" for k, v in zip(ds.keys, [0, 1, 1, 2], strict=True))
    want = hashlib.sha256(listing.encode()).hexdigest()
    assert ds.listing_sha256() == want
    assert ds.describe() == {"format": "folder", "root": str(tmp_path.resolve()), "listing_sha256": want,
                             "rows": 4, "classes": 3}


def test_folder_dataset_corrupt_file_names_key(tmp_path: Path) -> None:
    _save(tmp_path / "a" / "good.png", _image(1))
    (tmp_path / "a" / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    ds = FolderDataset(tmp_path, 16)
    bad = ds.keys.index("a/bad.jpg")
    with pytest.raises(CorruptImageError) as info:
        ds.load(bad)
    assert info.value.key == "a/bad.jpg"


def test_folder_dataset_empty_or_missing_is_config_error(tmp_path: Path) -> None:
    (tmp_path / "someone").mkdir()
    with pytest.raises(ConfigError, match="no images"):
        FolderDataset(tmp_path, 16)
    with pytest.raises(ConfigError, match="does not exist"):
        FolderDataset(tmp_path / "nope", 16)


def test_folder_dataset_says_why_an_image_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _save(tmp_path / "a" / "good.png", _image(1))
    (tmp_path / "a" / "text.jpg").write_bytes(b"a text file")
    ds = FolderDataset(tmp_path, 16)
    with pytest.raises(CorruptImageError, match=r"'a/text\.jpg': not an image"):
        ds.load(ds.keys.index("a/text.jpg"))
    monkeypatch.setattr("readers.base.MAX_IMAGE_PIXELS", 100)
    with pytest.raises(CorruptImageError, match=r"'a/good\.png': too large: 24 x 24 pixels > 100"):
        ds.load(ds.keys.index("a/good.png"))
