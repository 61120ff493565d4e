"""`cache.direct`: byte-offset row reads equal h5py's, and datasets with filters are refused."""
from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np

from cache.direct import ChunkedRows


def _file(path: Path, **kw: object) -> np.ndarray:
    data = np.random.default_rng(0).standard_normal((103, 2, 6)).astype(np.float16)
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    with h5py.File(path, "w") as f:
        f.create_dataset("pad", data=np.arange(50))  # the embeddings do not start the file
        if kw:
            f.create_dataset("emb", data=data, chunks=(8, 2, 6), **kw)
        else:
            f.create_dataset("emb", shape=data.shape, dtype=data.dtype, chunks=(8, 2, 6), dcpl=dcpl)
            f["emb"][()] = data
    return data


def test_rows_read_by_offset_equal_the_stored_rows(tmp_path: Path) -> None:
    data = _file(tmp_path / "a.h5")
    reader = ChunkedRows.open(tmp_path / "a.h5", "emb", threads=3)
    assert reader is not None and reader.chunk_rows == 8 and len(reader.offsets) == 13
    for rows in (np.array([0]), np.array([5, 6, 7, 8, 9, 40, 96, 101, 102]), np.arange(103)):
        np.testing.assert_array_equal(reader.read(rows), data[rows])
    copy = pickle.loads(pickle.dumps(reader))  # as a DataLoader worker receives it
    np.testing.assert_array_equal(copy.read(np.array([3, 77])), data[[3, 77]])
    reader.close()
    copy.close()


def test_rows_read_as_spans_over_gaps_equal_the_stored_rows(tmp_path: Path) -> None:
    data = _file(tmp_path / "a.h5")
    rows = np.array([0, 2, 3, 7, 8, 12, 13, 40, 45, 102])  # gaps inside chunks, across a border, and wide
    for gap in (0, 1, 4, 100):
        reader = ChunkedRows.open(tmp_path / "a.h5", "emb", threads=2, gap_rows=gap)
        assert reader is not None and reader.gap_rows == gap
        np.testing.assert_array_equal(reader.read(rows), data[rows])
        reader.close()


def test_compressed_datasets_are_left_to_h5py(tmp_path: Path) -> None:
    _file(tmp_path / "z.h5", compression="gzip")
    assert ChunkedRows.open(tmp_path / "z.h5", "emb") is None
