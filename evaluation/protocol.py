"""Pair-verification metrics, following insightface `verification.py` for accuracy.

Inputs are embeddings the caller has already flip-fused (emb(x) + emb(flip(x))) and L2-normalised.
Scores passed to `roc_auc`, `roc_curve` and `tar_at_far` are similarities: higher = more alike
(cosine, or minus the squared L2 distance).
"""
from __future__ import annotations

import math

import numpy as np

from common.errors import ConfigError

THRESHOLDS = np.arange(0, 4, 0.01)


def squared_l2_distance(emb1: np.ndarray, emb2: np.ndarray) -> np.ndarray:
    """Squared Euclidean distance per pair: [n, D] x [n, D] -> [n], as insightface computes it."""
    emb1 = np.asarray(emb1)
    emb2 = np.asarray(emb2)
    if emb1.ndim != 2 or emb1.shape != emb2.shape:
        raise ValueError(f"embeddings must both be [n, D], got {emb1.shape} and {emb2.shape}")
    return np.sum(np.square(np.subtract(emb1, emb2)), 1)


def kfold_splits(n: int, nfolds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Contiguous (train, test) index splits as sklearn `KFold(nfolds, shuffle=False)` makes them.

    The first `n % nfolds` test folds hold one extra item; `nfolds == 1` tests on the training set,
    like insightface's `LFold`.
    """
    indices = np.arange(n)
    if nfolds == 1:
        return [(indices, indices)]
    sizes = np.full(nfolds, n // nfolds, dtype=np.int64)
    sizes[: n % nfolds] += 1
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    splits = []
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        test = indices[start:stop]
        train = np.concatenate([indices[:start], indices[stop:]])
        splits.append((train, test))
    return splits


def correct_counts(dist: np.ndarray, issame: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Correct decisions per threshold, predicting "same" when `dist < threshold`: [n] -> [T] int64.

    Equals tp + tn of insightface `calculate_accuracy` for every threshold at once, via sorted
    distances (count of genuine pairs below t plus impostor pairs at or above t).
    """
    dist = np.asarray(dist, dtype=np.float64)
    genuine = np.sort(dist[issame])
    impostor = np.sort(dist[~issame])
    tp = np.searchsorted(genuine, thresholds, side="left")
    tn = impostor.size - np.searchsorted(impostor, thresholds, side="left")
    return (tp + tn).astype(np.int64)


def verify(
    emb1: np.ndarray, emb2: np.ndarray, issame: np.ndarray, nfolds: int = 10
) -> dict[str, float | list[float]]:
    """k-fold verification accuracy exactly as insightface `verification.py` computes it.

    Distance = squared L2; thresholds = arange(0, 4, 0.01); per fold, the threshold is the first
    argmax of accuracy on the training folds, and the fold's accuracy is measured on its test fold.
    Returns `accuracy_mean`, `accuracy_std` (population std over folds), `thresholds` (chosen per fold)
    and `fold_accuracies`, all as plain floats.
    """
    issame = np.asarray(issame, dtype=bool)
    dist = squared_l2_distance(emb1, emb2)
    n = dist.shape[0]
    if issame.shape != (n,):
        raise ValueError(f"issame must have shape ({n},), got {issame.shape}")
    if nfolds < 1 or n < nfolds:
        raise ConfigError(f"eval.nfolds = {nfolds} needs at least that many pairs, got {n}")
    fold_accuracies: list[float] = []
    best_thresholds: list[float] = []
    for train, test in kfold_splits(n, nfolds):
        best = int(np.argmax(correct_counts(dist[train], issame[train], THRESHOLDS)))
        threshold = THRESHOLDS[best : best + 1]
        correct = int(correct_counts(dist[test], issame[test], threshold)[0])
        fold_accuracies.append(correct / test.size)
        best_thresholds.append(float(threshold[0]))
    accuracies = np.array(fold_accuracies)
    return {
        "accuracy_mean": float(np.mean(accuracies)),
        "accuracy_std": float(np.std(accuracies)),
        "thresholds": best_thresholds,
        "fold_accuracies": fold_accuracies,
    }


def _split_scores(scores: np.ndarray, issame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    issame = np.asarray(issame, dtype=bool).ravel()
    if scores.shape != issame.shape:
        raise ValueError(f"scores {scores.shape} and issame {issame.shape} differ in length")
    return scores[issame], scores[~issame]


def roc_auc(scores: np.ndarray, issame: np.ndarray) -> float | None:
    """Area under the ROC curve as the exact Mann-Whitney statistic (ties count 1/2).

    AUC = P(score_genuine > score_impostor) + P(equal) / 2 over all genuine x impostor pairs;
    None when either class is empty.
    """
    genuine, impostor = _split_scores(scores, issame)
    if genuine.size == 0 or impostor.size == 0:
        return None
    impostor = np.sort(impostor)
    below = np.searchsorted(impostor, genuine, side="left")
    at_or_below = np.searchsorted(impostor, genuine, side="right")
    twice_wins = 2 * int(below.sum()) + int((at_or_below - below).sum())
    return twice_wins / (2 * genuine.size * impostor.size)


def roc_curve(scores: np.ndarray, issame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC points (fpr, tpr), accepting pairs with score >= t for every distinct score t.

    Starts at (0, 0) and ends at (1, 1); a rate whose class is empty is reported as 0.
    """
    genuine_mask = np.asarray(issame, dtype=bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    _split_scores(scores, genuine_mask)
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    sorted_genuine = genuine_mask[order]
    last_of_group = np.r_[np.nonzero(np.diff(sorted_scores))[0], sorted_scores.size - 1]
    tps = np.r_[0, np.cumsum(sorted_genuine)[last_of_group]]
    fps = np.r_[0, np.cumsum(~sorted_genuine)[last_of_group]]
    n_pos, n_neg = int(sorted_genuine.sum()), int((~sorted_genuine).sum())
    tpr = tps / n_pos if n_pos else np.zeros(tps.shape)
    fpr = fps / n_neg if n_neg else np.zeros(fps.shape)
    return fpr.astype(np.float64), tpr.astype(np.float64)


def far_key(far: float) -> str:
    """Short key for a false-accept rate: 1e-3 -> "1e-3", 5e-4 -> "5e-4"."""
    mantissa, exponent = f"{far:e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def tar_at_far(
    scores: np.ndarray, issame: np.ndarray, fars: tuple[float, ...] = (1e-3, 1e-4)
) -> dict[str, float | None]:
    """True-accept rate at each false-accept rate; pairs are accepted when score > threshold.

    Rule: with n_neg impostor scores sorted in decreasing order s_0 >= s_1 >= ..., let
    k = floor(far * n_neg); the threshold is s_k, the (k+1)-th highest impostor score. It is the
    lowest threshold at which at most k impostors (a fraction <= far) score strictly above it.
    TAR = fraction of genuine scores strictly above it. None when far * n_neg < 1 (too few impostor
    pairs to measure that rate) or when there are no genuine pairs; TAR = 1 when far >= 1.
    """
    genuine, impostor = _split_scores(scores, issame)
    descending = np.sort(impostor)[::-1]
    result: dict[str, float | None] = {}
    for far in fars:
        k = _far_rank(far, descending.size)
        if k is None or genuine.size == 0:
            result[far_key(far)] = None
        elif k >= descending.size:
            result[far_key(far)] = 1.0
        else:
            result[far_key(far)] = float(np.mean(genuine > descending[k]))
    return result


def _far_rank(far: float, n_neg: int) -> int | None:
    """k = floor(far * n_neg), the rank (0 = highest) of the impostor score that is `tar_at_far`'s threshold;
    None when k < 1 (too few impostor pairs to measure that rate)."""
    k = math.floor(far * n_neg + 1e-9)
    return None if k < 1 else k


def far_thresholds(
    scores: np.ndarray, issame: np.ndarray, fars: tuple[float, ...] = (1e-3, 1e-4)
) -> dict[str, float | None]:
    """The score threshold of each `tar_at_far` value: pairs scoring strictly above it are accepted, and at
    most a fraction `far` of impostor pairs do. Same units as `scores`; None where `tar_at_far` is None,
    where there are no genuine pairs, and where far * n_neg >= n_neg (every pair is accepted)."""
    genuine, impostor = _split_scores(scores, issame)
    descending = np.sort(impostor)[::-1]
    out: dict[str, float | None] = {}
    for far in fars:
        k = _far_rank(far, descending.size)
        ok = k is not None and k < descending.size and genuine.size > 0
        out[far_key(far)] = float(descending[k]) if ok and k is not None else None
    return out


def summarize(
    emb1: np.ndarray,
    emb2: np.ndarray,
    issame: np.ndarray,
    nfolds: int = 10,
    fars: tuple[float, ...] = (1e-3, 1e-4),
) -> dict[str, object]:
    """The per-set record of `evaluate`'s summary: accuracy_mean, accuracy_std, auc, tar_at_far, pairs.

    Scores for AUC and TAR@FAR are minus the squared L2 distance (monotone in cosine for unit vectors).
    """
    result = verify(emb1, emb2, issame, nfolds)
    scores = -squared_l2_distance(emb1, emb2).astype(np.float64)
    return {
        "accuracy_mean": result["accuracy_mean"],
        "accuracy_std": result["accuracy_std"],
        "auc": roc_auc(scores, issame),
        "tar_at_far": tar_at_far(scores, issame, fars),
        "pairs": int(np.asarray(issame).shape[0]),
        "thresholds": result["thresholds"],
        "fold_accuracies": result["fold_accuracies"],
    }
