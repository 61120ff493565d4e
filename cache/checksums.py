"""Integrity of published files: per-block CRC32 of a finished cache's datasets, SHA-256 of a whole file.

The cache checksums (layout in `cache.layout`, next to `CHECKSUMMED`) are computed by
`CacheWriter.finalize` from the finished file and checked by `TeacherCache` on open. CRC32 detects
accidental damage (bit rot, a torn copy, a tool writing into the file), not deliberate tampering; it
runs at about 3.6 GB/s here, so a whole 2 GiB cache is checked in well under a second once read.
"""
from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeAlias

import h5py
import numpy as np

from cache import layout
from common.errors import ConfigError

SAMPLE_BLOCKS = 8  # blocks checked besides the first and the last by a "sample" check
SAMPLE_SEED = 20231001
VERIFY_MODES = ("sample", "full", "none")
_HASH_READ_BYTES = 1 << 22

Rows: TypeAlias = "h5py.Dataset | np.ndarray"  # rows of an HDF5 dataset or of an array


def block_crc32(block: np.ndarray) -> int:
    """CRC32 of an array's bytes, little-endian and in C order (the same on every machine).

    Strings (object arrays of `str` or `bytes`, as h5py reads `keys`) count as their UTF-8 bytes,
    separated by NUL (which an HDF5 string cannot hold).
    """
    arr = np.ascontiguousarray(block)
    if arr.dtype.kind == "O":
        return zlib.crc32(b"\0".join(v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in arr.reshape(-1)))
    return zlib.crc32(arr.astype(arr.dtype.newbyteorder("<"), copy=False).reshape(-1).view(np.uint8).data)


def block_count(length: int, rows: int) -> int:
    """Number of checksum blocks of a dataset of `length` rows: ceil(length / rows), at least 1."""
    return max(1, -(-length // rows))


def dataset_checksums(data: Rows, rows: int) -> np.ndarray:
    """[B] uint32 CRC32 of each block of `rows` rows of `data` (an HDF5 dataset or an array)."""
    return np.array([block_crc32(data[b * rows:(b + 1) * rows]) for b in range(block_count(len(data), rows))],
                    dtype=np.uint32)


def write_checksums(file: h5py.File, rows: int) -> None:
    """Store the checksums of every dataset of `layout.CHECKSUMMED` in `file`, computed from `file` itself."""
    for name in layout.CHECKSUMMED:
        file.create_dataset(layout.checksum_name(name), data=dataset_checksums(file[name], rows), dtype=np.uint32,
                            track_times=False)
    file.attrs[layout.ATTR_CHECKSUM_ROWS] = int(rows)


def sample_blocks(count: int, extra: int = SAMPLE_BLOCKS) -> list[int]:
    """The blocks a "sample" check reads: the first, the last and `extra` others (the same ones every time)."""
    if count <= extra + 2:
        return list(range(count))
    middle = np.random.default_rng(SAMPLE_SEED).choice(np.arange(1, count - 1), size=extra, replace=False)
    return [0, *sorted(int(b) for b in middle), count - 1]


def checksum_rows(value: object, path: Path) -> int:
    """The stored `checksum_rows` attribute as a positive int; ConfigError naming `path` when it is not one."""
    if isinstance(value, np.integer):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"teacher cache '{path}': attribute '{layout.ATTR_CHECKSUM_ROWS}' is {value!r}, expected "
                          "a positive integer; delete it and run `python cli.py extract` again")
    return value


def check_blocks(path: Path, name: str, data: Rows, stored: np.ndarray, rows: int,
                 blocks: Sequence[int] | None = None) -> None:
    """Compare `blocks` (None: all) of dataset `name`'s `data` with their `stored` CRC32, in increasing order.

    ConfigError naming `path`, the dataset and the rows of the first block that differs (or a
    checksum table of the wrong length), ending in what to do: delete the cache and extract again.
    """
    count = block_count(len(data), rows)
    if stored.shape != (count,):
        raise ConfigError(f"teacher cache '{path}': dataset '{layout.checksum_name(name)}' has shape {stored.shape}, "
                          f"expected ({count},) for {len(data)} rows in blocks of {rows}; delete it and run "
                          "`python cli.py extract` again")
    for b in range(count) if blocks is None else blocks:
        block = data[b * rows:(b + 1) * rows]
        if block_crc32(block) != int(stored[b]):
            last = b * rows + max(len(block), 1) - 1
            raise ConfigError(f"teacher cache '{path}' is corrupt: dataset '{name}' rows {b * rows}..{last} "
                              f"(block {b} of {count}) no longer match the checksum written at extraction; "
                              "delete it and run `python cli.py extract` again")


def verify_cache(file: h5py.File, path: Path, mode: str, in_memory: Mapping[str, np.ndarray]) -> None:
    """Check `file`'s blocks against their stored CRC32 (`check_blocks`); ConfigError on a mismatch.

    mode "full" checks every block, "sample" the blocks of `sample_blocks` (but every block of the
    datasets given in `in_memory`, already read whole, which are checked there instead of in the
    file), "none" nothing. Datasets are checked in `layout.CHECKSUMMED` order.
    """
    if mode == "none":
        return
    rows = checksum_rows(file.attrs.get(layout.ATTR_CHECKSUM_ROWS), path)
    for name in layout.CHECKSUMMED:
        data: Rows = in_memory.get(name, file[name])
        everything = mode == "full" or name in in_memory
        blocks = None if everything else sample_blocks(block_count(len(data), rows))
        check_blocks(path, name, data, file[layout.checksum_name(name)][()], rows, blocks)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_READ_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
