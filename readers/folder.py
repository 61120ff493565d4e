"""Image-folder data sets: `root/<identity>/<image>`, one sub-folder per identity."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from common.errors import ConfigError
from readers.base import CorruptImageError, FaceDataset

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES)


class FolderDataset(FaceDataset):
    """Identities are the sub-folders of `root` sorted by name (labels 0..C-1), images sorted by name.

    Keys are paths relative to `root` in posix form. Hidden entries and sub-folders without images are
    skipped, so labels stay contiguous.
    """

    def __init__(self, root: str | os.PathLike[str], image_size: int) -> None:
        base = Path(root)
        if not base.is_dir():
            raise ConfigError(f"image folder '{base}' does not exist or is not a folder")
        keys: list[str] = []
        labels: list[int] = []
        identities = sorted(e.name for e in os.scandir(base) if e.is_dir() and not e.name.startswith("."))
        for name in identities:
            files = sorted(e.name for e in os.scandir(base / name) if e.is_file() and _is_image(e.name))
            if not files:
                continue
            label = labels[-1] + 1 if labels else 0
            keys.extend(f"{name}/{f}" for f in files)
            labels.extend([label] * len(files))
        if not keys:
            raise ConfigError(
                f"image folder '{base}' holds no images: expected {base}/<identity>/<image> with suffix "
                + "/".join(IMAGE_SUFFIXES)
            )
        super().__init__("folder", os.path.abspath(base), image_size, keys, np.asarray(labels, dtype=np.int64))

    def encoded(self, index: int) -> bytes:
        key = self.keys[index]
        try:
            return (Path(self.root) / key).read_bytes()
        except OSError as e:
            raise CorruptImageError(key, f"cannot read: {e.strerror or e}") from None
