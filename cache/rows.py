"""Embeddings as a row source: one view of [N, D] rows read by range or by row set, from RAM or from the file.

The cache's post-processing (positives, index, quality report) runs over every row. At users' scale
(MS1MV2: 5.8M rows, Glint360K: 17.1M rows at D = 512) one float32 view of every row is 12 and 35 GB,
more than a 24 GB machine holds beside anything else, so these building blocks read float32 blocks
of at most `block_rows` rows through a `RowSource` instead of taking one [N, D] array: an `ArrayRows`
over an array in RAM (what tests and small caches pass), or a `ViewRows` over the [N, 2, D] HDF5
dataset, which reads sorted rows as runs of consecutive rows and converts each block to float32.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import torch

BLOCK_ROWS = 65536


def row_blocks(rows: np.ndarray, chunk_rows: int) -> Iterator[tuple[int, int, int]]:
    """Split sorted unique rows into runs of consecutive rows that stay inside one storage chunk.

    Yields (first row, end row exclusive, position of the first row in `rows`).
    """
    for start, stop, at, _ in read_spans(rows, chunk_rows, 0):
        yield start, stop, at


def read_spans(rows: np.ndarray, chunk_rows: int, gap: int) -> Iterator[tuple[int, int, int, int]]:
    """Group sorted unique rows into spans to read in one request each: rows at most `gap` rows apart
    that stay inside one storage chunk share a span (the rows between them are read and dropped).

    Yields (first row, end row exclusive, position in `rows` of the span's first row, of its end).
    `gap = 0` gives `row_blocks`' runs of consecutive rows.
    """
    if len(rows) == 0:
        return
    cut = (np.diff(rows) > gap + 1) | (rows[1:] // chunk_rows != rows[:-1] // chunk_rows)
    starts = np.concatenate([[0], np.flatnonzero(cut) + 1])
    ends = np.concatenate([starts[1:], [len(rows)]])
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        yield int(rows[s]), int(rows[e - 1]) + 1, s, e


class RowSource(Protocol):
    """[N, D] float32 rows, read in pieces."""

    num_rows: int
    dim: int

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows start..stop-1: [stop - start, D] float32."""

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Sorted unique rows [n] -> [n, D] float32."""


def as_float32(x: np.ndarray) -> np.ndarray:
    """A C-contiguous float32 copy (or x itself when it already is one); float16 converts through torch,
    several times faster than numpy's `astype` on these CPUs (0.46 s for 67M values with numpy)."""
    if x.dtype == np.float16:
        return torch.from_numpy(x).float().contiguous().numpy()  # a strided view converts without a copy first
    return np.ascontiguousarray(x, dtype=np.float32)


class ArrayRows:
    """A `RowSource` over an [N, D] array (any float dtype) in RAM."""

    def __init__(self, emb: np.ndarray) -> None:
        if emb.ndim != 2:
            raise ValueError(f"embeddings must be [N, D], got shape {emb.shape}")
        self.emb = emb
        self.num_rows, self.dim = int(emb.shape[0]), int(emb.shape[1])

    def read(self, start: int, stop: int) -> np.ndarray:
        return as_float32(self.emb[start:stop])

    def take(self, rows: np.ndarray) -> np.ndarray:
        return as_float32(self.emb[rows])


class ViewRows:
    """A `RowSource` over view `view` of an [N, 2, D] dataset (h5py, or an array), chunk-aligned reads."""

    def __init__(self, emb: Any, view: int = 0, chunk_rows: int = 1024) -> None:
        if len(emb.shape) != 3 or emb.shape[1] != 2:
            raise ValueError(f"embeddings must be [N, 2, D], got shape {emb.shape}")
        self.emb = emb
        self.view = int(view)
        self.chunk_rows = max(1, int(chunk_rows))
        self.num_rows, self.dim = int(emb.shape[0]), int(emb.shape[2])

    def read(self, start: int, stop: int) -> np.ndarray:
        # whole rows (both views, whole storage chunks), then the view: a strided HDF5 selection without
        # a chunk cache is read row by row
        return as_float32(np.asarray(self.emb[start:stop])[:, self.view])

    def take(self, rows: np.ndarray) -> np.ndarray:
        if isinstance(self.emb, np.ndarray):
            return as_float32(self.emb[rows, self.view])
        out = np.empty((len(rows), self.dim), dtype=self.emb.dtype)
        for start, stop, at in row_blocks(np.asarray(rows, dtype=np.int64), self.chunk_rows):
            out[at:at + stop - start] = self.emb[start:stop][:, self.view]
        return as_float32(out)


class SubsetRows:
    """A `RowSource` over some rows of another: row i here is row `rows[i]` there (rows sorted, unique)."""

    def __init__(self, source: RowSource, rows: np.ndarray) -> None:
        self.source = source
        self.rows = np.asarray(rows, dtype=np.int64)
        self.num_rows, self.dim = len(self.rows), source.dim

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.source.take(self.rows[start:stop])

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self.source.take(self.rows[rows])


def as_row_source(emb: np.ndarray | RowSource) -> RowSource:
    """`emb` as a `RowSource`: an [N, D] array is wrapped in `ArrayRows`, a source is returned as it is."""
    if isinstance(emb, np.ndarray):
        return ArrayRows(emb)
    return emb


def blocks(source: RowSource, block_rows: int = BLOCK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, [b, D] float32 block) over all rows in order, `block_rows` at a time."""
    for start in range(0, source.num_rows, block_rows):
        yield start, source.read(start, min(start + block_rows, source.num_rows))
