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
from common.atomic import atomic_path, atomic_write_text
from common.errors import ConfigError
from config.choices import INDEX_KINDS, check_choice

TRAIN_POINTS_PER_LIST = 64  # FAISS wants 39..256 training points per inverted list
TRAIN_SEED = 1234


def default_nlist(n: int) -> int:
    """About 4 * sqrt(N) inverted lists, at least 1 and at most N."""
    return max(1, min(n, int(round(4 * math.sqrt(n)))))


def build_index(emb: np.ndarray, kind: str = "flat", nlist: int = 0, nprobe: int = 16,
                ids: np.ndarray | None = None) -> faiss.Index:
    """An inner-product index over emb [N, D] float32 (unit norm: scores are cosines).

    kind "flat": exact `IndexFlatIP`; "ivf": `IndexIVFFlat` with `nlist` lists (0: about 4 * sqrt(N))
    trained on a seeded sample of up to 64 * nlist rows, searched with `nprobe` lists. Search results
    are `ids` [N] (e.g. dataset rows) when given, else positions 0..N-1.
    """
    check_choice(kind, INDEX_KINDS, "cache.index")
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] == 0:
        raise ValueError(f"emb must be a non-empty [N, D] array, got shape {emb.shape}")
    n, dim = emb.shape
    if ids is not None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if ids.shape != (n,):
            raise ValueError(f"ids must have shape ({n},), got {ids.shape}")
    if kind == "flat":
        flat = faiss.IndexFlatIP(dim)
        index: faiss.Index = flat if ids is None else faiss.IndexIDMap2(flat)
    else:
        lists = min(nlist or default_nlist(n), n)
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
        sample = min(n, lists * TRAIN_POINTS_PER_LIST)
        rng = np.random.default_rng(TRAIN_SEED)
        train = emb if sample == n else emb[np.sort(rng.choice(n, size=sample, replace=False))]
        index.cp.seed = TRAIN_SEED
        index.train(train)
        index.nprobe = max(1, min(int(nprobe), lists))
    if ids is None:
        index.add(emb)
    else:
        index.add_with_ids(emb, ids)
    return index


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
