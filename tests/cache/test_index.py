"""`cache.index`: the FAISS index against numpy search, save and load."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cache import build_index, load_index, save_index
from cache.paths import index_checksum_path
from common.errors import ConfigError


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_index_search_matches_numpy_and_round_trips(tmp_path: Path, kind: str) -> None:
    rng = np.random.default_rng(9)
    emb = rng.standard_normal((400, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = np.arange(400) * 3 + 1
    index = build_index(emb, kind=kind, nlist=8, nprobe=8, ids=ids)  # nprobe = nlist: exhaustive
    queries = emb[:20] + 0.1 * rng.standard_normal((20, 16)).astype(np.float32)
    sims, found = index.search(queries, 5)
    brute = queries @ emb.T
    want = np.argsort(-brute, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(found, ids[want])
    np.testing.assert_allclose(sims, np.take_along_axis(brute, want, axis=1), atol=1e-5)
    target = tmp_path / "teacher.faiss"
    save_index(index, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["teacher.faiss", "teacher.faiss.sha256"]
    loaded = load_index(target)
    assert loaded.ntotal == 400
    np.testing.assert_array_equal(loaded.search(queries, 5)[1], found)
    with pytest.raises(ConfigError, match="missing.faiss"):
        load_index(tmp_path / "missing.faiss")


def test_a_changed_index_file_is_refused_naming_it(tmp_path: Path) -> None:
    emb = np.random.default_rng(3).standard_normal((50, 8)).astype(np.float32)
    target = save_index(build_index(emb), tmp_path / "teacher.faiss")
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte in the vectors: faiss still reads it
    target.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=r"teacher\.faiss.*checksum"):
        load_index(target)
    target.write_bytes(np.random.default_rng(0).bytes(len(data)))
    with pytest.raises(ConfigError, match=r"teacher\.faiss"):
        load_index(target)
    save_index(build_index(emb), target)
    assert load_index(target).ntotal == 50
    index_checksum_path(target).unlink()
    with pytest.raises(ConfigError, match=r"teacher\.faiss\.sha256"):
        load_index(target)


def test_ivfpq_and_auto_kinds_with_recall_against_exact_search() -> None:
    from cache.index import index_recall, resolve_kind
    from cache.rows import ArrayRows

    rng = np.random.default_rng(2)
    centres = rng.standard_normal((50, 32))
    emb = (centres[rng.integers(0, 50, 3000)] + 0.3 * rng.standard_normal((3000, 32))).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = np.arange(3000) + 100
    queries = np.arange(0, 3000, 97)
    flat = build_index(ArrayRows(emb), kind="flat", ids=ids, block_rows=512)
    assert index_recall(flat, emb, queries, k=10, ids=ids, block_rows=700) == 1.0
    pq = build_index(emb, kind="ivfpq", nlist=16, nprobe=16, pq_m=8, ids=ids, block_rows=512)
    assert pq.ntotal == 3000 and pq.nlist == 16 and pq.pq.M == 8
    recall = index_recall(pq, emb, queries, k=10, ids=ids)
    assert 0.3 < recall < 1.0  # compressed: approximate, but far above chance (10 / 3000)
    assert resolve_kind("auto", 1000, 512) == "flat" and resolve_kind("auto", 2_000_000, 512) == "ivfpq"
    with pytest.raises(ConfigError, match="cache.pq_m"):
        build_index(emb, kind="ivfpq", pq_m=5)
    assert resolve_kind("auto", 1000, 512, pq_m=48) == "flat"  # pq_m matters only for an IVF-PQ index
    with pytest.raises(ConfigError, match="cache.pq_m"):
        resolve_kind("auto", 2_000_000, 512, pq_m=48)
