"""`evaluation.protocol`: insightface verification, k-fold splits, ROC, AUC, TAR@FAR against direct computations."""
from __future__ import annotations

import numpy as np
import pytest

from common.errors import ConfigError
from evaluation.protocol import kfold_splits, roc_auc, roc_curve, summarize, tar_at_far, verify


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _planted_pairs(n: int, dim: int, seed: int, dtype: type = np.float64) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    issame = rng.random(n) < 0.5
    emb1 = _unit(rng.normal(size=(n, dim)))
    other = _unit(rng.normal(size=(n, dim)))
    strength = rng.uniform(0.2, 1.5, size=(n, 1))
    emb2 = np.where(issame[:, None], _unit(emb1 * strength + other * 0.6), other)
    return emb1.astype(dtype), emb2.astype(dtype), issame


def _reference_accuracy(threshold: float, dist: np.ndarray, issame: np.ndarray) -> float:
    predict = np.less(dist, threshold)
    tp = np.sum(np.logical_and(predict, issame))
    tn = np.sum(np.logical_and(np.logical_not(predict), np.logical_not(issame)))
    return float(tp + tn) / dist.size


def _reference_verify(emb1: np.ndarray, emb2: np.ndarray, issame: np.ndarray, nfolds: int) -> tuple:
    """insightface calculate_roc written as plain loops, with np.array_split for the folds."""
    thresholds = np.arange(0, 4, 0.01)
    dist = np.sum(np.square(np.subtract(emb1, emb2)), 1)
    folds = np.array_split(np.arange(len(issame)), nfolds)
    accuracies, chosen = [], []
    for k, test in enumerate(folds):
        train = np.concatenate([f for m, f in enumerate(folds) if m != k])
        best_index, best_accuracy = 0, -1.0
        for t, threshold in enumerate(thresholds):
            accuracy = _reference_accuracy(threshold, dist[train], issame[train])
            if accuracy > best_accuracy:
                best_index, best_accuracy = t, accuracy
        accuracies.append(_reference_accuracy(thresholds[best_index], dist[test], issame[test]))
        chosen.append(thresholds[best_index])
    return np.array(accuracies), np.array(chosen)


@pytest.mark.parametrize(("n", "dim", "dtype"), [(1003, 16, np.float64), (257, 8, np.float32)])
def test_verify_matches_reference_loop(n: int, dim: int, dtype: type) -> None:
    emb1, emb2, issame = _planted_pairs(n, dim, seed=n, dtype=dtype)
    result = verify(emb1, emb2, issame, nfolds=10)
    accuracies, chosen = _reference_verify(emb1, emb2, issame, 10)
    assert result["fold_accuracies"] == accuracies.tolist()
    assert result["thresholds"] == chosen.tolist()
    assert result["accuracy_mean"] == pytest.approx(np.mean(accuracies), abs=1e-15)
    assert result["accuracy_std"] == pytest.approx(np.std(accuracies), abs=1e-15)
    assert 0.7 < result["accuracy_mean"] <= 1.0


def test_verify_with_many_accuracy_ties() -> None:
    rng = np.random.default_rng(5)
    n = 123
    angles = rng.integers(0, 4, size=(n, 2)) * (np.pi / 3)
    emb1 = np.stack([np.cos(angles[:, 0]), np.sin(angles[:, 0])], 1)
    emb2 = np.stack([np.cos(angles[:, 1]), np.sin(angles[:, 1])], 1)
    issame = (angles[:, 0] == angles[:, 1]) ^ (rng.random(n) < 0.2)
    result = verify(emb1, emb2, issame, nfolds=10)
    accuracies, chosen = _reference_verify(emb1, emb2, issame, 10)
    assert result["fold_accuracies"] == accuracies.tolist()
    assert result["thresholds"] == chosen.tolist()


def test_kfold_splits_follow_kfold_semantics() -> None:
    splits = kfold_splits(23, 10)
    sizes = [len(test) for _, test in splits]
    assert sizes == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]
    assert np.concatenate([test for _, test in splits]).tolist() == list(range(23))
    for train, test in splits:
        assert sorted(np.concatenate([train, test]).tolist()) == list(range(23))
    assert [t.tolist() for t in kfold_splits(4, 1)[0]] == [[0, 1, 2, 3]] * 2


@pytest.mark.timeout(20)  # takes ~0.05 s here; the old wall-clock assertion allowed 2 s for verify()
def test_verify_too_few_pairs_and_speed() -> None:
    emb1, emb2, issame = _planted_pairs(7, 4, seed=1)
    with pytest.raises(ConfigError, match="eval.nfolds"):
        verify(emb1, emb2, issame, nfolds=10)
    emb1, emb2, issame = _planted_pairs(6000, 64, seed=2, dtype=np.float32)
    verify(emb1, emb2, issame)


def _scores_with_ties(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    issame = rng.random(n) < 0.4
    scores = np.round(rng.normal(size=n) + issame * 1.2, 1)
    return scores, issame


def test_roc_auc_matches_double_loop() -> None:
    scores, issame = _scores_with_ties(400, seed=3)
    genuine, impostor = scores[issame], scores[~issame]
    total = 0.0
    for g in genuine:
        for i in impostor:
            total += 1.0 if g > i else 0.5 if g == i else 0.0
    assert roc_auc(scores, issame) == pytest.approx(total / (len(genuine) * len(impostor)), abs=1e-12)
    assert roc_auc(scores, np.ones_like(issame)) is None


def test_roc_curve_matches_brute_force_and_auc() -> None:
    scores, issame = _scores_with_ties(300, seed=4)
    fpr, tpr = roc_curve(scores, issame)
    levels = np.sort(np.unique(scores))[::-1]
    expected_fpr = [0.0] + [np.mean(scores[~issame] >= t) for t in levels]
    expected_tpr = [0.0] + [np.mean(scores[issame] >= t) for t in levels]
    np.testing.assert_allclose(fpr, expected_fpr, atol=1e-12)
    np.testing.assert_allclose(tpr, expected_tpr, atol=1e-12)
    trapezoid = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert trapezoid == pytest.approx(roc_auc(scores, issame), abs=1e-12)


def _direct_tar(scores: np.ndarray, issame: np.ndarray, far: float) -> float:
    """Lowest impostor-score threshold whose strictly-above impostor fraction is <= far."""
    genuine, impostor = scores[issame], scores[~issame]
    valid = [t for t in impostor if np.sum(impostor > t) <= far * len(impostor) + 1e-9]
    return float(np.mean(genuine > min(valid)))


@pytest.mark.parametrize("seed", [6, 7])
def test_tar_at_far_matches_direct_computation(seed: int) -> None:
    scores, issame = _scores_with_ties(6000, seed=seed)
    n_neg = int(np.sum(~issame))
    result = tar_at_far(scores, issame, fars=(1e-3, 1e-2, 0.05))
    assert set(result) == {"1e-3", "1e-2", "5e-2"}
    for far, key in ((1e-3, "1e-3"), (1e-2, "1e-2"), (0.05, "5e-2")):
        assert n_neg * far >= 1
        assert result[key] == pytest.approx(_direct_tar(scores, issame, far), abs=1e-12)
    assert tar_at_far(scores, issame)["1e-4"] is None


def test_tar_at_far_exact_counts_without_ties() -> None:
    impostor = np.arange(2000, dtype=np.float64)
    genuine = np.array([1996.5, 1997.5, 1998.5, 1500.0])
    scores = np.concatenate([impostor, genuine])
    issame = np.r_[np.zeros(2000, bool), np.ones(4, bool)]
    result = tar_at_far(scores, issame, fars=(1e-3, 1e-4))
    assert result["1e-3"] == pytest.approx(2 / 4)
    assert result["1e-4"] is None


def test_summarize_fields() -> None:
    emb1, emb2, issame = _planted_pairs(600, 8, seed=9)
    summary = summarize(emb1, emb2, issame)
    assert {"accuracy_mean", "accuracy_std", "auc", "tar_at_far", "pairs"} <= set(summary)
    assert summary["pairs"] == 600
    assert set(summary["tar_at_far"]) == {"1e-3", "1e-4"}
    assert summary["tar_at_far"]["1e-4"] is None
    assert 0.5 < summary["auc"] <= 1.0


@pytest.mark.parametrize("seed", [0, 1])
def test_far_thresholds_by_brute_force(seed: int) -> None:
    """Each threshold: the lowest score of the impostors such that at most far x n_neg impostors score strictly
    above it, found by trying every impostor score; TAR there is tar_at_far's value."""
    from evaluation.protocol import far_thresholds

    rng = np.random.default_rng(seed)
    issame = rng.random(3000) < 0.3
    scores = np.round(rng.standard_normal(3000) + 1.5 * issame, 2)  # rounded: ties among impostors
    fars = (1e-2, 5e-3, 1e-3)
    got = far_thresholds(scores, issame, fars)
    tars = tar_at_far(scores, issame, fars)
    impostor, genuine = scores[~issame], scores[issame]
    for far in fars:
        key = f"{far:.0e}".replace("e-0", "e-")
        allowed = np.floor(far * impostor.size + 1e-9)
        ok = [t for t in np.unique(impostor) if (impostor > t).sum() <= allowed]
        want = min(ok)
        assert got[key] == pytest.approx(want)
        assert (impostor > got[key]).mean() <= far
        assert tars[key] == pytest.approx(np.mean(genuine > got[key]))
    assert far_thresholds(scores[:50], issame[:50], (1e-4,)) == {"1e-4": None}
