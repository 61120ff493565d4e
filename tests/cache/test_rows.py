"""`cache.rows`: row sources read the rows of the array they stand for, by range and by row set."""
from __future__ import annotations

import numpy as np
import pytest

from cache.rows import ArrayRows, SubsetRows, ViewRows, blocks, read_spans, row_blocks


def test_sources_read_and_take_the_rows_they_stand_for() -> None:
    rng = np.random.default_rng(0)
    views = rng.standard_normal((23, 2, 5)).astype(np.float16)
    want = views[:, 1].astype(np.float32)
    picked = np.array([0, 3, 4, 5, 11, 22])
    for source in (ArrayRows(views[:, 1]), ViewRows(views, view=1, chunk_rows=4)):
        assert (source.num_rows, source.dim) == (23, 5)
        np.testing.assert_array_equal(source.read(3, 9), want[3:9])
        np.testing.assert_array_equal(source.take(picked), want[picked])
        np.testing.assert_array_equal(np.concatenate([b for _, b in blocks(source, 7)]), want)
        assert [s for s, _ in blocks(source, 7)] == [0, 7, 14, 21]
    subset = SubsetRows(ViewRows(views, view=1, chunk_rows=4), picked)
    np.testing.assert_array_equal(subset.read(1, 4), want[picked[1:4]])
    np.testing.assert_array_equal(subset.take(np.array([0, 5])), want[[0, 22]])


def test_row_blocks_split_runs_at_gaps_and_chunk_borders() -> None:
    rows = np.array([0, 1, 2, 3, 4, 9, 10, 15])
    assert list(row_blocks(rows, 4)) == [(0, 4, 0), (4, 5, 4), (9, 11, 5), (15, 16, 7)]


def test_read_spans_bridge_gaps_up_to_the_limit_inside_one_chunk() -> None:
    rows = np.array([0, 2, 3, 5, 9, 10, 15])
    assert list(read_spans(rows, 8, 0)) == [(0, 1, 0, 1), (2, 4, 1, 3), (5, 6, 3, 4), (9, 11, 4, 6), (15, 16, 6, 7)]
    assert list(read_spans(rows, 8, 1)) == [(0, 6, 0, 4), (9, 11, 4, 6), (15, 16, 6, 7)]
    assert list(read_spans(rows, 8, 4)) == [(0, 6, 0, 4), (9, 16, 4, 7)]  # 5 -> 9 crosses the chunk border at 8
    assert list(read_spans(rows, 100, 5)) == [(0, 16, 0, 7)]
    assert list(read_spans(np.array([], dtype=np.int64), 8, 3)) == []


def test_view_rows_need_two_views() -> None:
    with pytest.raises(ValueError, match=r"\[N, 2, D\]"):
        ViewRows(np.zeros((4, 5)))
