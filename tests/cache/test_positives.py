"""`cache.positives`: teacher positives against a brute-force numpy computation."""
from __future__ import annotations

import numpy as np
import pytest

import cache.positives as positives_module
from cache import build_positives


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(emb: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Full similarity matrix, other identities / self / left-out rows masked, sort by (-sim, row)."""
    n = len(labels)
    sims = emb.astype(np.float64) @ emb.astype(np.float64).T
    allowed = (labels[:, None] == labels[None, :]) & (labels[:, None] >= 0) & ~np.eye(n, dtype=bool)
    pos = np.full((n, k), -1, dtype=np.int64)
    val = np.zeros((n, k), dtype=np.float64)
    for i in range(n):
        cand = np.flatnonzero(allowed[i])
        cand = cand[np.lexsort((cand, -sims[i, cand]))][:k]
        pos[i, :len(cand)] = cand
        val[i, :len(cand)] = sims[i, cand]
    return pos, val


def test_positives_match_brute_force_with_padding_and_left_out_rows() -> None:
    rng = np.random.default_rng(0)
    sizes = [1, 2, 3, 5, 12, 30, 7]  # identities smaller than k + 1 are padded
    labels = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    labels[[3, 17]] = -1  # skipped images: neither queried nor returned
    emb = unit_rows(rng, len(labels), 24)
    k = 6
    pos, sims = build_positives(emb, labels, k)
    want_pos, want_sims = brute_force(emb, labels, k)
    assert pos.shape == (len(labels), k) and pos.dtype == np.int64 and sims.dtype == np.float32
    np.testing.assert_array_equal(pos, want_pos)
    np.testing.assert_allclose(sims, want_sims, atol=1e-5)
    assert not np.any(pos == np.arange(len(labels))[:, None]), "a row is its own positive"
    assert np.all(pos[labels < 0] == -1)
    assert np.all(pos[labels == 0] == -1)  # a singleton identity has no positives
    valid = pos >= 0
    assert np.all(labels[pos[valid]] == np.broadcast_to(labels[:, None], pos.shape)[valid])


def test_ties_are_broken_by_row_index() -> None:
    # Entries in {0, +-1/2} on 4 dims: unit norm and exact inner products, with many exact ties.
    rng = np.random.default_rng(1)
    patterns = np.array([[1, 1, 1, 1], [1, 1, 1, -1], [1, -1, 1, 1], [1, 1, -1, -1]], dtype=np.float32) / 2
    emb = patterns[rng.integers(0, len(patterns), size=60)]
    labels = np.repeat([0, 1], 30)
    for k in (1, 3, 8, 29, 40):
        pos, sims = build_positives(emb, labels, k)
        want_pos, want_sims = brute_force(emb, labels, k)
        np.testing.assert_array_equal(pos, want_pos)
        np.testing.assert_array_equal(sims, want_sims.astype(np.float32))


def test_large_identity_is_searched_in_query_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(positives_module, "MAX_RESULTS_PER_SEARCH", 64)
    rng = np.random.default_rng(2)
    labels = np.repeat([0, 1], [50, 9])
    emb = unit_rows(rng, len(labels), 16)
    pos, sims = build_positives(emb, labels, 4)
    want_pos, want_sims = brute_force(emb, labels, 4)
    np.testing.assert_array_equal(pos, want_pos)
    np.testing.assert_allclose(sims, want_sims, atol=1e-5)


def test_degenerate_inputs() -> None:
    emb = unit_rows(np.random.default_rng(3), 4, 8)
    pos, sims = build_positives(emb, np.array([0, 0, 1, 1]), 0)
    assert pos.shape == (4, 0) and sims.shape == (4, 0)
    pos, _ = build_positives(emb, np.full(4, -1), 3)
    assert np.all(pos == -1)
    with pytest.raises(ValueError, match="row 1"):
        build_positives(np.where(np.arange(4)[:, None] == 1, np.nan, emb), np.zeros(4, dtype=int), 2)


@pytest.mark.parametrize("block_rows", [1, 9, 1 << 16])
def test_positives_read_identity_blocks_from_a_file_view_equal_the_array(block_rows: int) -> None:
    from cache.rows import ViewRows

    rng = np.random.default_rng(5)
    labels = rng.permutation(np.repeat(np.arange(9), [1, 2, 3, 4, 5, 6, 7, 8, 9]))
    labels[4] = -1
    views = np.stack([unit_rows(rng, len(labels), 16), unit_rows(rng, len(labels), 16)], axis=1).astype(np.float16)
    want_pos, want_sims = build_positives(views[:, 1].astype(np.float32), labels, 4)
    pos, sims = build_positives(ViewRows(views, view=1, chunk_rows=4), labels, 4, block_rows=block_rows)
    np.testing.assert_array_equal(pos, want_pos)
    np.testing.assert_array_equal(sims, want_sims)
