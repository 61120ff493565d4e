"""`cache.shards`: shares of rows are contiguous whole batches, and merged shares equal one writer's cache."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cache import partial_path, shard_path
from cache.shards import merge_shard, shard_range
from common.errors import PipelineError
from tests.cache.test_writer import assert_same_contents, build_cache, finish, make_data, open_writer, write_rows


def test_shares_are_contiguous_whole_batches_covering_every_row() -> None:
    assert [shard_range(48, 2, r, 16) for r in (0, 1)] == [(0, 32), (32, 48)]
    assert [shard_range(10, 4, r, 4) for r in range(4)] == [(0, 4), (4, 8), (8, 10), (10, 10)]  # an empty share
    for n, world, batch in ((1, 3, 8), (100, 3, 7), (97, 8, 1)):
        shares = [shard_range(n, world, r, batch) for r in range(world)]
        assert shares[0][0] == 0 and shares[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(shares, shares[1:], strict=False))
        assert all((stop - start) % batch == 0 for start, stop in shares if stop < n)


def test_merged_shares_equal_the_cache_of_one_writer(tmp_path: Path) -> None:
    data = make_data(n=37)
    one = build_cache(tmp_path / "one.h5", data)
    out = tmp_path / "two.h5"
    for rank in range(3):
        start, stop = shard_range(37, 3, rank, 4)
        part = {**data, "emb": data["emb"][start:stop], "labels": data["labels"][start:stop],
                "keys": data["keys"][start:stop]}
        shard = open_writer(shard_path(out, rank, 3), part, "float16")
        write_rows(shard, part, np.arange(stop - start)[::-1].copy(), block=5)  # any order
        shard.close()
    writer = open_writer(out, data, "float16")
    copied = [merge_shard(writer, partial_path(shard_path(out, r, 3)), shard_range(37, 3, r, 4)[0], block_rows=6)
              for r in range(3)]
    assert copied == [16, 16, 5]
    assert_same_contents(finish(writer, data), one)


def test_a_missing_shard_is_named(tmp_path: Path) -> None:
    writer = open_writer(tmp_path / "c.h5", make_data(n=5), "float16")
    with pytest.raises(PipelineError, match="shard1-of-2"):
        merge_shard(writer, partial_path(shard_path(tmp_path / "c.h5", 1, 2)), 0)
    writer.close()
