"""The data-set interface every reader implements, and the shared image decoder."""
from __future__ import annotations

import abc
import hashlib
import io
import re
from collections.abc import Sequence

import numpy as np
from PIL import Image

from common.errors import ConfigError

MAX_IMAGE_PIXELS = 40_000_000
"""Images with more pixels (width x height, read from the header) are refused before decoding."""


class CorruptImageError(Exception):
    """An image whose bytes cannot be read or decoded.

    `key` names the row at fault and `reason` says why in a few words ("truncated", "not an image",
    "too large: W x H pixels > limit", ...); `str(e)` is "corrupt image '<key>': <reason>".
    """

    def __init__(self, key: str, reason: str = "") -> None:
        super().__init__(key, reason)
        self.key = key
        self.reason = reason

    def __str__(self) -> str:
        return f"corrupt image '{self.key}'" + (f": {self.reason}" if self.reason else "")


def _reason(err: Exception) -> str:
    """A short reason for a PIL failure; PIL's own text is kept only where it says something specific."""
    text = str(err)
    if isinstance(err, Image.UnidentifiedImageError):
        return "not an image (unknown or damaged format)"
    if isinstance(err, Image.DecompressionBombError):  # PIL's own limit, at 2 x Image.MAX_IMAGE_PIXELS
        found = re.search(r"\((\d+) pixels\) exceeds limit of (\d+)", text)
        return f"too large: {found.group(1)} pixels > {found.group(2)}" if found else f"too large: {text}"
    if "truncated" in text.lower():
        return f"truncated ({text})" if "(" in text else "truncated"
    return f"cannot decode: {text or type(err).__name__}"


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    """JPEG bytes of a uint8 [H, W, 3] RGB array."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), "RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def decode_image(data: bytes, key: str, size: int, *, max_pixels: int | None = None) -> np.ndarray:
    """Decode encoded image bytes to uint8 [size, size, 3] RGB, resizing bilinearly if needed.

    An image of more than `max_pixels` pixels (default: the module's `MAX_IMAGE_PIXELS`, read at call
    time) is refused from its header, before any pixel is decoded; PIL's own bomb check (2 x
    `PIL.Image.MAX_IMAGE_PIXELS`) still applies above that. Failures raise CorruptImageError with a
    reason: "truncated", "not an image", "too large: W x H pixels > limit" or "cannot decode: ...".
    """
    limit = MAX_IMAGE_PIXELS if max_pixels is None else int(max_pixels)
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            if width * height > limit:
                raise CorruptImageError(key, f"too large: {width} x {height} pixels > {limit}")
            im.load()
            rgb = im.convert("RGB")
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        raise CorruptImageError(key, _reason(e)) from None
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.array(rgb, dtype=np.uint8)


def remap_labels(raw: np.ndarray) -> np.ndarray:
    """Map arbitrary integer labels to 0..C-1 in the sorted order of the distinct values."""
    _, dense = np.unique(np.asarray(raw, dtype=np.int64), return_inverse=True)
    return dense.astype(np.int64).reshape(-1)


class FaceDataset(abc.ABC):
    """Rows of (key, identity label) whose images load as uint8 [image_size, image_size, 3] RGB.

    Subclasses call `__init__` with their listing and implement `load` or `encoded` (each in terms of the
    other: readers of stored files give their bytes, the generator renders arrays).
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

    def load(self, index: int) -> np.ndarray:
        """Image of row `index` as uint8 [image_size, image_size, 3] RGB; CorruptImageError if undecodable."""
        return decode_image(self.encoded(index), self.keys[index], self.image_size)

    def encoded(self, index: int) -> bytes:
        """The stored bytes of row `index` as they are (JPEG, PNG, ...), or a JPEG of `load` where nothing is
        stored; CorruptImageError if they cannot be read."""
        if type(self).load is FaceDataset.load:
            raise NotImplementedError(f"{type(self).__name__} implements neither load nor encoded")
        return encode_jpeg(self.load(index))

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
