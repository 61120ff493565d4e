"""Data set -> .rec/.idx/property and .rec -> folder: exact round trips, identity records, no overwrite."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.errors import ConfigError, PipelineError
from readers import FolderDataset, ListDataset, RecordIODataset, SyntheticDataset
from readers.base import encode_jpeg
from readers.convert import dataset_to_folder, dataset_to_rec
from readers.recordio import RecordIOReader, unpack, write_rec_dataset


def _folder(root: Path, identities: int = 3, per: int = 4) -> Path:
    faces = SyntheticDataset(identities, per, 16, seed=5, difficulty=1.0)
    for c in range(identities):
        (root / f"person_{c}").mkdir(parents=True)
        for i in range(per):
            image = faces.render(c, i)
            if i % 2:
                Image.fromarray(image).save(root / f"person_{c}" / f"{i:02d}.png")
            else:
                (root / f"person_{c}" / f"{i:02d}.jpg").write_bytes(encode_jpeg(image))
    return root


def _rows(dataset: object) -> list[tuple[bytes, int]]:
    assert isinstance(dataset, (FolderDataset, ListDataset, RecordIODataset))
    return [(dataset.encoded(i), int(dataset.labels[i])) for i in range(len(dataset))]


def test_folder_to_rec_to_folder_is_exact(tmp_path: Path) -> None:
    source = FolderDataset(_folder(tmp_path / "faces"), 16)
    ticks: list[int] = []
    result = dataset_to_rec(source, tmp_path / "set" / "train.rec", ticks.append)
    assert ticks == [1] * 12  # the progress bar advances once per image
    assert (result.images, result.identities, result.image_size) == (12, 3, (16, 16))
    assert (tmp_path / "set" / "property").read_text() == "3,16,16\n"
    rec = RecordIODataset(tmp_path / "set", 16)
    assert _rows(rec) == _rows(source)
    header, _ = unpack(RecordIOReader(tmp_path / "set" / "train.rec", tmp_path / "set" / "train.idx").read_idx(0))
    assert header.label.tolist() == [13.0, 16.0]  # images 1..12, identity records 13..15
    dataset_to_folder(rec, tmp_path / "back", ticks.append)
    assert len(ticks) == 24
    back = FolderDataset(tmp_path / "back", 16)
    assert _rows(back) == _rows(source)
    assert sorted(p.suffix for p in (tmp_path / "back").rglob("*.*")).count(".png") == 6


def test_a_list_file_out_of_identity_order_is_grouped(tmp_path: Path) -> None:
    _folder(tmp_path / "faces", identities=2, per=2)
    files = sorted((tmp_path / "faces").rglob("*.*"))
    order = [files[0], files[2], files[1], files[3]]  # labels 0 1 0 1
    (tmp_path / "list.txt").write_text("".join(f"{p} {p.parent.name[-1]}\n" for p in order))
    source = ListDataset(tmp_path / "list.txt", 16)
    dataset_to_rec(source, tmp_path / "out" / "data.rec")
    rec = RecordIODataset(tmp_path / "out" / "data.rec", 16)
    assert rec.labels.tolist() == [0, 0, 1, 1]
    assert [r[0] for r in _rows(rec)] == [source.encoded(i) for i in (0, 2, 1, 3)]


def test_rec_to_folder_to_rec_is_exact(tmp_path: Path) -> None:
    faces = SyntheticDataset(3, 4, 16, seed=1, difficulty=1.0)
    write_rec_dataset(((faces.load(i), int(faces.labels[i])) for i in range(len(faces))),
                      tmp_path / "a.rec", tmp_path / "a.idx")
    original = RecordIODataset(tmp_path / "a.rec", 16)
    dataset_to_folder(original, tmp_path / "folder")
    dataset_to_rec(FolderDataset(tmp_path / "folder", 16), tmp_path / "b" / "b.rec")
    assert _rows(RecordIODataset(tmp_path / "b" / "b.rec", 16)) == _rows(original)


def test_conversions_refuse_to_overwrite(tmp_path: Path) -> None:
    source = FolderDataset(_folder(tmp_path / "faces"), 16)
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "property").write_text("keep")
    with pytest.raises(ConfigError, match="property.*never overwrite"):
        dataset_to_rec(source, tmp_path / "set" / "train.rec")
    assert not (tmp_path / "set" / "train.rec").exists()
    with pytest.raises(ConfigError, match="never overwrite"):
        dataset_to_folder(source, tmp_path / "faces")
    with pytest.raises(ConfigError, match="must end in .rec"):
        dataset_to_rec(source, tmp_path / "x.txt")


def test_a_face_of_another_size_or_a_broken_file_writes_nothing(tmp_path: Path) -> None:
    root = _folder(tmp_path / "faces")
    Image.fromarray(np.zeros((20, 16, 3), np.uint8)).save(root / "person_2" / "99.png")
    with pytest.raises(PipelineError, match="person_2/99.png' is 20 x 16"):
        dataset_to_rec(FolderDataset(root, 16), tmp_path / "set" / "train.rec")
    (root / "person_2" / "99.png").write_bytes(b"GIF89a not a face")
    with pytest.raises(PipelineError, match="person_2/99.png"):
        dataset_to_rec(FolderDataset(root, 16), tmp_path / "set" / "train.rec")
    with pytest.raises(PipelineError, match="person_2/99.png"):
        dataset_to_folder(FolderDataset(root, 16), tmp_path / "copy")
    assert not (tmp_path / "set").exists() or list((tmp_path / "set").iterdir()) == []
    assert not (tmp_path / "copy").exists()
