"""`train.positive_policy`: the farthest-positives table against a naive loop, and the table each policy gives."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from common.errors import ConfigError
from stages.training.policy import farthest_positives, positive_table


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.array([0, 1, 0, 2, 0, 1, 0, 3, 0, 1], dtype=np.int64)  # identity 3 has one row
    emb = rng.standard_normal((labels.size, 5)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    emb[4] = emb[0]  # a duplicate image: as similar to row 0 as row 0 itself, yet never row 0's own positive
    return emb, labels


def _naive_farthest(emb: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    out = np.full((labels.size, k), -1, dtype=np.int64)
    for r in range(labels.size):
        if labels[r] < 0:
            continue
        mates = [j for j in range(labels.size) if j != r and labels[j] == labels[r]]
        mates.sort(key=lambda j: (float(emb[r] @ emb[j]), j))
        out[r, :len(mates[:k])] = mates[:k]
    return out


def test_farthest_positives_match_a_naive_sort() -> None:
    emb, labels = _data()
    for k in (1, 3, 6):
        got = farthest_positives(lambda rows: emb[rows], labels, k)
        np.testing.assert_array_equal(got, _naive_farthest(emb, labels, k))
    left_out = labels.copy()
    left_out[[2, 5]] = -1  # skipped rows are neither searched nor returned
    got = farthest_positives(lambda rows: emb[rows], left_out, 4)
    np.testing.assert_array_equal(got, _naive_farthest(emb, left_out, 4))
    assert (got[[2, 5, 7]] == -1).all()


def test_farthest_positives_block_large_identities(monkeypatch: pytest.MonkeyPatch) -> None:
    emb, labels = _data(1)
    monkeypatch.setattr("stages.training.policy.MAX_SIMS_PER_BLOCK", 5)  # one query row per block
    got = farthest_positives(lambda rows: emb[rows], labels, 3)
    np.testing.assert_array_equal(got, _naive_farthest(emb, labels, 3))


def test_each_policy_gives_its_table() -> None:
    emb, labels = _data(2)
    flipped, _ = _data(3)
    views = np.stack([emb, flipped], axis=1)  # [N, 2, D]: the farthest table reads view 0
    done = np.ones(labels.size, dtype=bool)
    done[6] = False
    nearest = np.full((labels.size, 4), -1, dtype=np.int64)
    cache = SimpleNamespace(positives=nearest, labels=labels, done=done,
                            targets=lambda rows, flips: views[rows, flips.astype(np.int64)])
    assert positive_table("nearest", cache) is nearest
    assert positive_table("random", cache) is None
    farthest = positive_table("farthest", cache)
    np.testing.assert_array_equal(farthest, _naive_farthest(emb, np.where(done, labels, -1), 4))
    with pytest.raises(ConfigError, match="train.positive_policy"):
        positive_table("hardest", cache)
