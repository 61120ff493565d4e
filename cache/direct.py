"""Row reads straight from the file bytes of an uncompressed chunked HDF5 dataset, in parallel threads.

The cache's embeddings are stored uncompressed in chunks of whole rows, allocated when the file is
created (`cache.writer`), so row r of chunk c sits at a fixed byte offset: the chunk's address in
the file plus (r mod chunk_rows) x the row's bytes. For the scattered rows of a training batch,
h5py reads one run at a time (measured: 14.6 ms per batch of 512 random rows of a page-cached
100k-row cache, about 29 us a row), and with the file's pages out of RAM each of those reads waits
for the disk in turn. `ChunkedRows` instead looks up every chunk's address once (h5py's
`get_chunk_info`) and reads the batch's runs of consecutive rows with `os.pread` from `threads`
threads, so many requests are in flight at once (`bench/scale.py`, docs/scale.md). Rows at
most `GAP_ROWS` apart inside one chunk are read as one span and the rows between dropped: one 64 KB
span replaces several requests on a disk bound by requests more than bytes, and the rows of a P x M
batch's identity groups lie close together in a file grouped by identity (measured: +6% cold rows/s
for P x M batches of MS1MV2's size, docs/scale.md).

Only datasets without filters (compression, shuffle, checksums) qualify; `ChunkedRows.open` returns
None for others, and the caller reads through h5py. The bytes read are the ones the cache's CRC32
checksums cover (`cache.checksums`), verified when the cache is opened.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np

from cache.rows import read_spans

THREADS = 8
GAP_ROWS = 32  # rows of 2 x 512 float16 values: spans over gaps of up to 64 KB


class ChunkedRows:
    """Reads rows of one dataset [N, ...] of `path` by byte offset; safe to use from one process at a time."""

    def __init__(self, path: Path, offsets: np.ndarray, chunk_rows: int, row_shape: tuple[int, ...],
                 dtype: np.dtype, threads: int = THREADS, gap_rows: int = GAP_ROWS) -> None:
        self.path = path
        self.offsets = offsets  # [chunks] int64 file offset of each chunk
        self.chunk_rows = chunk_rows
        self.row_shape = row_shape
        self.dtype = dtype
        self.row_bytes = int(np.prod(row_shape)) * dtype.itemsize
        self.threads = threads
        self.gap_rows = gap_rows
        self._pid: int | None = None
        self._fd = -1
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path, name: str, threads: int = THREADS, gap_rows: int = GAP_ROWS) -> ChunkedRows | None:
        """The reader of dataset `name` of `path`, or None when its storage is not plain allocated chunks of rows."""
        with h5py.File(path, "r") as f:
            ds = f[name]
            chunks = ds.chunks
            if chunks is None or ds.compression is not None or ds.shuffle or ds.fletcher32 or ds.scaleoffset:
                return None
            if tuple(chunks[1:]) != tuple(ds.shape[1:]) or ds.id.get_create_plist().get_nfilters():
                return None
            count = -(-ds.shape[0] // chunks[0])
            dsid = ds.id
            if dsid.get_num_chunks() != count:
                return None  # chunks not all allocated
            offsets = np.empty(count, dtype=np.int64)
            for i in range(count):
                info = dsid.get_chunk_info(i)
                offsets[int(info.chunk_offset[0]) // chunks[0]] = info.byte_offset
            return cls(Path(path), offsets, int(chunks[0]), tuple(int(s) for s in ds.shape[1:]), np.dtype(ds.dtype),
                       threads, gap_rows)

    def _handles(self) -> tuple[int, ThreadPoolExecutor]:
        """This process's file descriptor and thread pool (a forked worker opens its own)."""
        with self._lock:
            if self._pid != os.getpid():
                self._fd = os.open(self.path, os.O_RDONLY)
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="cache-read")
                self._pid = os.getpid()
            assert self._pool is not None
            return self._fd, self._pool

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Sorted unique rows [n] -> [n, *row_shape] in the stored dtype."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), *self.row_shape), dtype=self.dtype)
        if not len(rows):
            return out
        flat = out.reshape(len(rows), -1).view(np.uint8).reshape(len(rows), self.row_bytes)
        runs = list(read_spans(rows, self.chunk_rows, self.gap_rows))
        fd, pool = self._handles()

        def read_runs(part: list[tuple[int, int, int, int]]) -> None:
            for start, stop, at, end in part:
                offset = int(self.offsets[start // self.chunk_rows]) + (start % self.chunk_rows) * self.row_bytes
                size = (stop - start) * self.row_bytes
                data = os.pread(fd, size, offset)
                if len(data) != size:
                    raise OSError(f"short read of {self.path} at byte {offset}: {len(data)} of {size} bytes")
                span = np.frombuffer(data, dtype=np.uint8).reshape(stop - start, self.row_bytes)
                flat[at:end] = span if end - at == stop - start else span[rows[at:end] - start]

        parts = [runs[i::self.threads] for i in range(min(self.threads, len(runs)))]
        for future in [pool.submit(read_runs, part) for part in parts]:
            future.result()
        return out

    def close(self) -> None:
        """Close this process's descriptor and threads."""
        with self._lock:
            if self._pid == os.getpid():
                os.close(self._fd)
                if self._pool is not None:
                    self._pool.shutdown(wait=False)
            self._pid, self._fd, self._pool = None, -1, None

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state.update(_pid=None, _fd=-1, _pool=None, _lock=None)
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
