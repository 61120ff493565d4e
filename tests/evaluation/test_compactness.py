"""`evaluation.compactness`: intra / inter-class similarity statistics and the teacher-student gap."""
from __future__ import annotations

import numpy as np
import pytest

from evaluation.compactness import compactness_gap, inter_class_similarities, intra_class_similarities, similarity_stats
from tests.evaluation.test_protocol import _unit


def _tiny_embeddings(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.array([2, 0, 2, 1, 0, 2, 5, 1, 0, 2])
    emb = _unit(rng.normal(size=(labels.size, 6)) + np.eye(6)[labels] * 2).astype(np.float32)
    return emb, labels


def test_similarity_stats_match_brute_force() -> None:
    emb, labels = _tiny_embeddings()
    n = len(labels)
    intra = [float(emb[i] @ emb[j]) for i in range(n) for j in range(i + 1, n) if labels[i] == labels[j]]
    inter = [float(emb[i] @ emb[j]) for i in range(n) for j in range(i + 1, n) if labels[i] != labels[j]]
    np.testing.assert_allclose(np.sort(intra_class_similarities(emb, labels)), np.sort(intra), atol=1e-6)
    np.testing.assert_allclose(np.sort(inter_class_similarities(emb, labels)), np.sort(inter), atol=1e-6)
    stats = similarity_stats(emb, labels)
    for side, values in (("intra", intra), ("inter", inter)):
        assert stats[side]["count"] == len(values)
        assert stats[side]["mean"] == pytest.approx(np.mean(values), abs=1e-6)
        assert stats[side]["std"] == pytest.approx(np.std(values), abs=1e-6)
        for q in (5, 25, 50, 75, 95):
            assert stats[side][f"p{q}"] == pytest.approx(np.percentile(values, q), abs=1e-6)
    assert stats["inter_sampled"] is False
    assert stats["separation"] == pytest.approx(np.mean(intra) - np.mean(inter), abs=1e-6)


def test_inter_sampling_is_deterministic_and_uniform() -> None:
    emb, labels = _tiny_embeddings(1)
    everything = inter_class_similarities(emb, labels)
    max_pairs = everything.size - 1
    sampled = inter_class_similarities(emb, labels, max_pairs=max_pairs, seed=3)
    assert sampled.size == max_pairs
    np.testing.assert_array_equal(sampled, inter_class_similarities(emb, labels, max_pairs=max_pairs, seed=3))
    assert not np.array_equal(sampled, inter_class_similarities(emb, labels, max_pairs=max_pairs, seed=4))
    pooled = np.concatenate(
        [inter_class_similarities(emb, labels, max_pairs=max_pairs, seed=s) for s in range(600)]
    )
    positions = np.argmin(np.abs(pooled[:, None] - everything[None, :]), axis=1)
    assert np.allclose(pooled, everything[positions], atol=1e-6)
    counts = np.bincount(positions, minlength=everything.size)
    expected = pooled.size / everything.size
    assert counts.min() > 0.75 * expected and counts.max() < 1.25 * expected
    stats = similarity_stats(emb, labels, max_pairs=10)
    assert stats["inter_sampled"] is True and stats["inter"]["count"] == 10


def test_compactness_gap_is_teacher_minus_student() -> None:
    emb, labels = _tiny_embeddings(2)
    teacher = similarity_stats(emb, labels)
    rng = np.random.default_rng(0)
    student = similarity_stats(_unit(emb + rng.normal(size=emb.shape).astype(np.float32)), labels)
    gap = compactness_gap(student, teacher)
    assert gap["intra_mean"] == pytest.approx(teacher["intra"]["mean"] - student["intra"]["mean"])
    assert gap["inter_std"] == pytest.approx(teacher["inter"]["std"] - student["inter"]["std"])
    assert gap["separation"] == pytest.approx(teacher["separation"] - student["separation"])
    single = similarity_stats(emb[:3], np.arange(3))
    assert single["intra"]["count"] == 0 and single["intra"]["mean"] is None
    assert compactness_gap(single, teacher)["intra_mean"] is None
