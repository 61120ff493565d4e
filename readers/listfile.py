"""List-file data sets: one `path label` line per image."""
from __future__ import annotations

import codecs
import os
from pathlib import Path

import numpy as np

from common.errors import ConfigError
from readers.base import CorruptImageError, FaceDataset, remap_labels


def _read_lines(path: Path) -> list[str]:
    """The file's lines decoded as UTF-8 (a leading byte-order mark is dropped).

    Bytes that are not UTF-8 are a ConfigError naming the file, the line and the byte offset.
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"list file '{path}' cannot be read: {e.strerror or e}") from None
    lines: list[str] = []
    offset = 3 if data.startswith(codecs.BOM_UTF8) else 0
    for lineno, chunk in enumerate(data[offset:].splitlines(keepends=True), start=1):
        try:
            lines.append(chunk.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise ConfigError(f"list file '{path}', line {lineno} (byte offset {offset + e.start}): not UTF-8 "
                              f"(byte 0x{chunk[e.start]:02x}); save the list file as UTF-8") from None
        offset += len(chunk)
    return lines


class ListDataset(FaceDataset):
    """Rows from a text file of `path label` lines.

    A path is relative to the list file's folder unless absolute; it may contain spaces (the label is
    the last field). Blank lines and lines starting with `#` are skipped. Integer labels are remapped to
    0..C-1 in the sorted order of the distinct values. The key of a row is its path as written. The file
    must be UTF-8 (a byte-order mark is allowed); other bytes are a ConfigError naming the line.
    """

    def __init__(self, list_file: str | os.PathLike[str], image_size: int) -> None:
        path = Path(list_file)
        if not path.is_file():
            raise ConfigError(f"list file '{path}' not found")
        keys: list[str] = []
        raw: list[int] = []
        seen: dict[str, int] = {}
        for lineno, line in enumerate(_read_lines(path), start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            fields = text.rsplit(None, 1)
            if len(fields) != 2:
                raise ConfigError(f"list file '{path}', line {lineno}: expected 'path label', got {text!r}")
            rel, label = fields
            try:
                value = int(label)
            except ValueError:
                raise ConfigError(
                    f"list file '{path}', line {lineno}: label {label!r} is not an integer"
                ) from None
            if not -2**63 <= value < 2**63:
                raise ConfigError(f"list file '{path}', line {lineno}: label {label} is outside the 64-bit range")
            raw.append(value)
            if rel in seen:
                raise ConfigError(f"list file '{path}', line {lineno}: '{rel}' already listed on line {seen[rel]}")
            seen[rel] = lineno
            keys.append(rel)
        if not keys:
            raise ConfigError(f"list file '{path}' lists no images")
        self._base = path.resolve().parent
        first = self._path(keys[0])
        if not first.is_file():
            raise ConfigError(
                f"list file '{path}', line {seen[keys[0]]}: image '{first}' not found "
                "(relative paths are read from the list file's folder)"
            )
        super().__init__("list", os.path.abspath(path), image_size, keys, remap_labels(np.asarray(raw)))

    def _path(self, key: str) -> Path:
        p = Path(key)
        return p if p.is_absolute() else self._base / p

    def encoded(self, index: int) -> bytes:
        key = self.keys[index]
        path = self._path(key)
        if path.exists() and not path.is_file():  # a FIFO would block, /dev/zero never end
            raise CorruptImageError(key, "not a regular file")
        try:
            return path.read_bytes()
        except OSError as e:
            raise CorruptImageError(key, f"cannot read: {e.strerror or e}") from None
