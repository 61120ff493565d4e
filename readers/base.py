"""The data-set interface every reader implements, and the shared image decoder."""
from __future__ import annotations

import abc
import hashlib
import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from common.errors import ConfigError


class CorruptImageError(Exception):
    """An image whose bytes cannot be read or decoded; `key` names the row at fault."""

    def __init__(self, key: str, reason: str = "") -> None:
        self.key = key
        super().__init__(f"corrupt image '{key}'" + (f": {reason}" if reason else ""))


def decode_image(data: bytes, key: str, size: int) -> np.ndarray:
    """Decode encoded image bytes to uint8 [size, size, 3] RGB, resizing bilinearly if needed."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            rgb = im.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise CorruptImageError(key, str(e) or type(e).__name__) from None
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.array(rgb, dtype=np.uint8)


def remap_labels(raw: np.ndarray) -> np.ndarray:
    """Map arbitrary integer labels to 0..C-1 in the sorted order of the distinct values."""
    _, dense = np.unique(np.asarray(raw, dtype=np.int64), return_inverse=True)
    return dense.astype(np.int64).reshape(-1)


class FaceDataset(abc.ABC):
    """Rows of (key, identity label) whose images load as uint8 [image_size, image_size, 3] RGB.

    Subclasses call `__init__` with their listing and implement `load`.
    """

    fmt: str
    root: str
    image_size: int
    keys: list[str]
    labels: np.ndarray
    num_classes: int

    def __init__(self, fmt: str, root: str, image_size: int, keys: Sequence[str], labels: np.ndarray) -> None:
        if int(image_size) <= 0:
            raise ConfigError(f"{fmt} data set '{root}': image_size must be positive, got {image_size}")
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(keys) != len(labels):
            raise ValueError(f"{len(keys)} keys but {len(labels)} labels")
        if len(set(keys)) != len(keys):
            raise ConfigError(f"{fmt} data set '{root}': keys are not unique")
        self.fmt = fmt
        self.root = root
        self.image_size = int(image_size)
        self.keys = list(keys)
        self.labels = labels
        self.num_classes = int(labels.max()) + 1 if len(labels) else 0
        self._listing_sha256: str | None = None

    def __len__(self) -> int:
        return len(self.keys)

    @abc.abstractmethod
    def load(self, index: int) -> np.ndarray:
        """Image of row `index` as uint8 [image_size, image_size, 3] RGB; CorruptImageError if undecodable."""

    def listing_sha256(self) -> str:
        """sha256 over "key\\tlabel\\n" for every row in order (computed once)."""
        if self._listing_sha256 is None:
            h = hashlib.sha256()
            for key, label in zip(self.keys, self.labels.tolist(), strict=True):
                h.update(f"{key}\t{label}\n".encode("utf-8"))
            self._listing_sha256 = h.hexdigest()
        return self._listing_sha256

    def describe(self) -> dict:
        """Fingerprint of the listing: format, root, listing sha256, row and class counts."""
        return {
            "format": self.fmt,
            "root": self.root,
            "listing_sha256": self.listing_sha256(),
            "rows": len(self),
            "classes": self.num_classes,
        }
