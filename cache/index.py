"""The FAISS inner-product index over view-0 teacher embeddings (`teacher.faiss` beside the cache).

Its SHA-256 is kept in `teacher.faiss.sha256` (`sha256sum -c` reads it); `load_index` checks it.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import faiss
import numpy as np

from cache.checksums import file_sha256
from cache.paths import index_checksum_path
from cache.rows import BLOCK_ROWS, RowSource, as_row_source, blocks
from common.atomic import atomic_path, atomic_write_text
from common.errors import ConfigError
from config.choices import INDEX_KINDS, check_choice

TRAIN_POINTS_PER_LIST = 64  # FAISS wants 39..256 training points per inverted list
TRAIN_SEED = 1234
# `kind = "auto"`: exact search while a float32 copy of the rows (what `IndexFlatIP` holds) stays
# under this many bytes (1M rows at D = 512), the compressed IVF-PQ above it (MS1MV2's flat index
# would be 12 GB, Glint360K's 35 GB).
AUTO_FLAT_MAX_BYTES = 2 * 2**30
PQ_MAX_NLIST = 1024  # ivfpq's default lists: training and assignment cost grows with nlist x N
PQ_BITS = 8


def default_nlist(n: int) -> int:
    """About 4 * sqrt(N) inverted lists, at least 1 and at most N."""
    return max(1, min(n, int(round(4 * math.sqrt(n)))))


def resolve_kind(kind: str, n: int, dim: int, pq_m: int = 64) -> str:
    """The index kind built for `kind` over n rows of dim values: "auto" becomes "flat" or "ivfpq".

    A ConfigError naming `cache.pq_m` when the kind is ivfpq and pq_m does not divide dim, so that
    `extract` can refuse the setting before it runs the teacher, not after.
    """
    check_choice(kind, INDEX_KINDS, "cache.index")
    resolved = kind if kind != "auto" else ("flat" if n * dim * 4 <= AUTO_FLAT_MAX_BYTES else "ivfpq")
    if resolved == "ivfpq" and (pq_m < 1 or dim % pq_m):
        raise ConfigError(f"config key 'cache.pq_m': {pq_m} must divide the embedding dimension {dim} "
                          f"(cache.index = {kind!r} builds an IVF-PQ index for {n} rows)")
    return resolved


def build_index(emb: np.ndarray | RowSource, kind: str = "flat", nlist: int = 0, nprobe: int = 16,
                ids: np.ndarray | None = None, pq_m: int = 64, block_rows: int = BLOCK_ROWS) -> faiss.Index:
    """An inner-product index over emb [N, D] (unit norm: scores are cosines): an array or a `RowSource`.

    kind "flat": exact `IndexFlatIP`; "ivf": `IndexIVFFlat` with `nlist` lists (0: about 4 * sqrt(N));
    "ivfpq": `IndexIVFPQ`, each row's residual coded in `pq_m` bytes (D must be a multiple of pq_m;
    0 lists: min(4 * sqrt(N), 1024)); "auto": flat up to `AUTO_FLAT_MAX_BYTES` of float32 rows, else
    ivfpq. IVF kinds are trained on a seeded sample of up to 64 * nlist rows and searched with
    `nprobe` lists. Rows are added `block_rows` at a time. `ids` [N] (e.g. dataset rows) are what
    searches return, else positions 0..N-1.
    """
    source = as_row_source(emb)
    n, dim = source.num_rows, source.dim
    if n == 0:
        raise ValueError("cannot build an index over 0 rows")
    kind = resolve_kind(kind, n, dim, pq_m)
    if ids is not None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if ids.shape != (n,):
            raise ValueError(f"ids must have shape ({n},), got {ids.shape}")
    if kind == "flat":
        flat = faiss.IndexFlatIP(dim)
        index: faiss.Index = flat if ids is None else faiss.IndexIDMap2(flat)
    else:
        lists = min(nlist or (min(default_nlist(n), PQ_MAX_NLIST) if kind == "ivfpq" else default_nlist(n)), n)
        quantizer = faiss.IndexFlatIP(dim)
        if kind == "ivf":
            index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
        else:
            ivfpq = faiss.IndexIVFPQ(quantizer, dim, lists, pq_m, PQ_BITS, faiss.METRIC_INNER_PRODUCT)
            ivfpq.pq.cp.seed = TRAIN_SEED
            index = ivfpq
        # PQ trains 2^8 centroids per sub-quantizer: at least 64 points each
        sample = min(n, max(lists * TRAIN_POINTS_PER_LIST, (1 << PQ_BITS) * 64 if kind == "ivfpq" else 0))
        rng = np.random.default_rng(TRAIN_SEED)
        picked = np.arange(n) if sample == n else np.sort(rng.choice(n, size=sample, replace=False))
        index.cp.seed = TRAIN_SEED
        index.train(source.take(picked))
        index.nprobe = max(1, min(int(nprobe), lists))
    for start, block in blocks(source, block_rows):
        if ids is None:
            index.add(block)
        else:
            index.add_with_ids(block, ids[start:start + len(block)])
    return index


def index_recall(index: faiss.Index, emb: np.ndarray | RowSource, queries: np.ndarray, k: int = 10,
                 ids: np.ndarray | None = None, block_rows: int = BLOCK_ROWS) -> float:
    """Recall@k of `index` against exact inner-product search over the same rows.

    queries: [q] rows of emb searched for; ids [N]: the index's ids of emb's rows (None: positions).
    Returns the mean over queries of |index's top k & exact top k| / k (1.0 for an exact index, up to ties).
    """
    source = as_row_source(emb)
    queries = np.asarray(queries, dtype=np.int64)
    order = np.argsort(queries, kind="stable")
    q = np.empty((len(queries), source.dim), dtype=np.float32)
    q[order] = source.take(queries[order])
    best_s = np.full((len(q), k), -np.inf, dtype=np.float32)
    best_i = np.full((len(q), k), -1, dtype=np.int64)
    for start, block in blocks(source, block_rows):
        s = q @ block.T
        cand_s = np.concatenate([best_s, s], axis=1)
        cand_i = np.concatenate([best_i, np.broadcast_to(np.arange(start, start + len(block)), s.shape)], axis=1)
        top = np.argpartition(-cand_s, k - 1, axis=1)[:, :k]
        best_s = np.take_along_axis(cand_s, top, axis=1)
        best_i = np.take_along_axis(cand_i, top, axis=1)
    exact = best_i if ids is None else np.asarray(ids, dtype=np.int64)[best_i]
    _, found = index.search(q, k)
    hits = [len(set(a.tolist()) & set(b.tolist())) for a, b in zip(exact, found, strict=True)]
    return float(np.mean(hits)) / k


def save_index(index: faiss.Index, path: str | os.PathLike[str]) -> Path:
    """Write `index` to `path` atomically, with its SHA-256 in `<path>.sha256` (`index_checksum_path`).

    The checksum is published before the index: a write interrupted between the two leaves an old
    index beside a new checksum, which `load_index` refuses and `extract` rebuilds.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))
        atomic_write_text(index_checksum_path(path), f"{file_sha256(tmp)}  {path.name}\n")
    return path


def _stored_sha256(path: Path) -> str:
    """The digest recorded for index `path`; ConfigError naming the checksum file when it is absent or malformed."""
    sidecar = index_checksum_path(path)
    try:
        digest = sidecar.read_text(encoding="utf-8").split()[0].lower()
    except (OSError, UnicodeDecodeError, IndexError):
        digest = ""
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ConfigError(f"FAISS index '{path}' has no valid checksum file '{sidecar}'; run "
                          "`python cli.py extract` again to rebuild the index")
    return digest


def load_index(path: str | os.PathLike[str]) -> faiss.Index:
    """Read an index written by `save_index` after checking its SHA-256.

    A missing, changed or unreadable file (or a missing checksum file) is a ConfigError naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"FAISS index '{path}' does not exist; run `python cli.py extract` first")
    want = _stored_sha256(path)
    try:
        have = file_sha256(path)
    except OSError as e:
        raise ConfigError(f"FAISS index '{path}' cannot be read: {e.strerror or e}") from None
    if have != want:
        raise ConfigError(f"FAISS index '{path}' does not match its checksum in '{index_checksum_path(path)}' "
                          "(the file changed after it was written); run `python cli.py extract` again to rebuild it")
    try:
        return faiss.read_index(str(path))
    except RuntimeError as e:
        raise ConfigError(f"FAISS index '{path}' cannot be read: {e}") from None
