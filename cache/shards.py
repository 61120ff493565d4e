"""A sharded extraction's pieces: each rank's contiguous share of rows, and merging a share's work file.

Under `torchrun`, `extract` gives rank r rows `shard_range(n, world, r, batch)` and writes them into
the work file of `paths.shard_path(cache, r, world)` with its own `CacheWriter` (rows numbered from
the share's first row). Rank 0 then copies every share's written rows into the one cache's writer
with `merge_shard` and finishes it as usual. Shares are whole teacher batches, so each image meets
the same batch as in a one-process run and the merged cache equals that run's bit for bit.
"""
from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from cache import layout
from cache.writer import CacheWriter
from common.errors import PipelineError

MERGE_BLOCK_ROWS = 65536


def shard_range(n: int, world: int, rank: int, batch: int) -> tuple[int, int]:
    """Rows [start, stop) of rank `rank`'s share of n rows: contiguous, a whole number of `batch` rows (the
    last share takes the rest, and is empty when there are more ranks than batches)."""
    per_rank = (n + world - 1) // world
    share = (per_rank + batch - 1) // batch * batch
    return min(n, rank * share), min(n, (rank + 1) * share)


def merge_shard(writer: CacheWriter, work_file: str | os.PathLike[str], start: int,
                block_rows: int = MERGE_BLOCK_ROWS) -> int:
    """Copy the rows written in a share's work file (its row i is the cache's row start + i) into `writer`,
    block by block, stored values unchanged (float16 -> float32 -> float16 is exact); returns the rows copied."""
    path = Path(work_file)
    if not path.exists():
        raise PipelineError(f"shard work file '{path}' is missing; run the torchrun extract again")
    copied = 0
    with h5py.File(path, "r") as f:
        done = f[layout.DONE][()].astype(bool)
        for at in range(0, len(done), block_rows):
            rows = np.flatnonzero(done[at:at + block_rows])
            if len(rows):
                emb = f[layout.EMBEDDINGS][at:at + block_rows][rows].astype(np.float32)
                writer.write(rows + at + start, emb, f[layout.NORMS][at:at + block_rows][rows])
                copied += len(rows)
    return copied
