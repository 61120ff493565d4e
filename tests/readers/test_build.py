"""`readers.build_dataset`: every data.format and the data.root errors."""
from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import ConfigError
from config import DataConfig
from readers import build_dataset, write_rec_dataset
from tests.readers.test_base import _image
from tests.readers.test_folder import _save
from tests.readers.test_recordio import _rec_rows


def test_build_dataset_formats_and_root_errors(tmp_path: Path) -> None:
    cfg = DataConfig(format="synthetic", image_size=16)
    cfg.synthetic.identities, cfg.synthetic.images_per_identity = 3, 2
    ds = build_dataset(cfg)
    assert len(ds) == 6 and ds.num_classes == 3 and ds.load(5).shape == (16, 16, 3)

    write_rec_dataset(_rec_rows(), tmp_path / "rec" / "train.rec", tmp_path / "rec" / "train.idx")
    assert len(build_dataset(DataConfig(format="rec", root=str(tmp_path / "rec"), image_size=16))) == 6
    _save(tmp_path / "faces" / "x" / "1.png", _image(0))
    assert build_dataset(DataConfig(format="folder", root=str(tmp_path / "faces"), image_size=16)).keys == ["x/1.png"]

    for fmt in ("folder", "rec", "list"):
        with pytest.raises(ConfigError, match="data.root"):
            build_dataset(DataConfig(format=fmt, root="", image_size=16))
        with pytest.raises(ConfigError, match="data.root"):
            build_dataset(DataConfig(format=fmt, root=str(tmp_path / "missing"), image_size=16))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="data.root"):
        build_dataset(DataConfig(format="folder", root=str(tmp_path / "empty"), image_size=16))
    with pytest.raises(ConfigError, match="data.format"):
        build_dataset(DataConfig(format="tfrecord", root=str(tmp_path), image_size=16))
