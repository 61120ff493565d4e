"""Data readers: image folders, list files, MXNet RecordIO and the synthetic face generator.

`ImageRows` (torch) is imported lazily so that `import readers` does not load torch.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.errors import ConfigError
from config.choices import DATA_FORMATS, check_choice
from config.schema import DataConfig
from readers.base import CorruptImageError, FaceDataset, decode_image
from readers.folder import FolderDataset
from readers.listfile import ListDataset
from readers.recordio import RecordIODataset, RecordIOReader, RecordIOWriter, write_rec_dataset
from readers.synthetic import SyntheticDataset, write_pair_set


def build_dataset(data_cfg: DataConfig) -> FaceDataset:
    """The training set that the `[data]` section describes."""
    fmt = data_cfg.format
    if fmt == "synthetic":
        s = data_cfg.synthetic
        return SyntheticDataset(s.identities, s.images_per_identity, data_cfg.image_size, s.seed, s.difficulty)
    check_choice(fmt, DATA_FORMATS, "data.format")
    readers: dict[str, Callable[[Path, int], FaceDataset]] = {
        "folder": FolderDataset, "rec": RecordIODataset, "list": ListDataset}
    if not data_cfg.root:
        raise ConfigError(f"config key 'data.root' must be set for data.format = {fmt!r}")
    root = Path(data_cfg.root)
    if not root.exists():
        raise ConfigError(f"config key 'data.root': '{root}' does not exist")
    try:
        return readers[fmt](root, data_cfg.image_size)
    except ConfigError as e:
        raise ConfigError(f"config key 'data.root' ({fmt}): {e}") from None


def __getattr__(name: str) -> Any:
    if name == "ImageRows":
        from readers.torch_rows import ImageRows

        return ImageRows
    raise AttributeError(f"module 'readers' has no attribute {name!r}")


__all__ = [
    "CorruptImageError", "FaceDataset", "decode_image", "FolderDataset", "ListDataset", "RecordIODataset",
    "RecordIOReader", "RecordIOWriter", "write_rec_dataset", "SyntheticDataset", "write_pair_set",
    "ImageRows", "build_dataset",
]
