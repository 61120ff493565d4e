"""`train.positive_policy`: the table of preferred same-identity rows that fills an anchor's group.

The sampler (`stages.training.sampler`) fills each anchor's group from this table first, then from
the identity's other rows in shuffled order. With `nearest` the table is the cache's `positives`
(each row's K most similar same-identity rows by teacher cosine, DESIGN.md section 2): in-batch
pairs are then easier than the identity's pairs, and hard positives are under-sampled
(`bench/positive_policy.py` measures it). `farthest` fills a group with the anchor's K least similar
same-identity rows instead; `random` uses no table, so in-batch pairs are a uniform draw of the
identity's pairs.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from cache.identity import identity_csr
from config.choices import POSITIVE_POLICIES, check_choice

log = logging.getLogger(__name__)

MAX_SIMS_PER_BLOCK = 1 << 22  # query rows x identity rows held at once


def farthest_positives(view: Callable[[np.ndarray], np.ndarray], labels: np.ndarray, k: int) -> np.ndarray:
    """Each row's k least similar same-identity rows by teacher cosine: [N, k] int64 dataset rows, -1 pads.

    view(rows) gives the [n, D] float32 unit teacher embeddings of those rows (view 0 of the cache);
    labels: [N] int, negative for rows to leave out. By increasing cosine, ties by increasing row,
    self excluded; an identity with L rows fills min(k, L - 1) columns.
    """
    labels = np.asarray(labels, dtype=np.int64)
    out = np.full((labels.size, k), -1, dtype=np.int64)
    if k == 0 or labels.size == 0 or labels.max() < 0:
        return out
    rows, offsets = identity_csr(labels, int(labels.max()) + 1)
    for c in np.flatnonzero(np.diff(offsets) >= 2).tolist():
        members = rows[offsets[c]:offsets[c + 1]]
        x = np.asarray(view(members), dtype=np.float32)
        m = min(k, len(members) - 1)
        block = max(1, MAX_SIMS_PER_BLOCK // len(members))
        for start in range(0, len(members), block):
            q = np.arange(start, min(start + block, len(members)))
            sims = x[q] @ x.T
            sims[np.arange(len(q)), q] = np.inf  # never the row itself
            order = np.argsort(sims, axis=1, kind="stable")[:, :m]
            out[members[q], :m] = members[order]
    return out


def positive_table(policy: str, cache: Any) -> np.ndarray | None:
    """The sampler's table for `train.positive_policy` from a teacher cache: [N, K] dataset rows (-1 pads) or None."""
    check_choice(policy, POSITIVE_POLICIES, "train.positive_policy")
    if policy == "random":
        return None
    if policy == "nearest":
        return np.asarray(cache.positives)
    start = time.perf_counter()
    labels = np.where(cache.done, cache.labels, -1)
    table = farthest_positives(lambda r: cache.targets(r, np.zeros(len(r), dtype=np.uint8)), labels,
                               int(cache.positives.shape[1]))
    log.info("train.positive_policy = farthest: %d rows' farthest positives in %.1f s", len(labels),
             time.perf_counter() - start)
    return table
