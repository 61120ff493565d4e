"""IJB 1:1 verification metrics from template-pair scores: ROC, AUC and TAR at FAR 1e-6 .. 1e-1.

Two readings of TAR@FAR are reported:

- `tar_at_far` (the project's rule, `evaluation.protocol.tar_at_far`): the threshold is the lowest at
  which at most floor(FAR x n_neg) impostor pairs score above it, and TAR is the fraction of genuine
  pairs above it. It is the ROC point of highest TPR whose FPR does not exceed FAR: a proper operating
  point, whose false-accept rate is at most the one named. This is the headline number.
- `tar_at_far_nearest` (how insightface's IJB script reads its ROC): the TPR of the ROC point whose FPR
  is nearest to FAR, ties to the higher TPR. That point may lie above FAR (e.g. FPR 1.4e-4 for
  FAR 1e-4), so it can be higher than `tar_at_far`; it is given to compare with published tables.
  insightface takes the point from sklearn's ROC with collinear points dropped, this one from every
  distinct score; they differ only where the nearest point lies inside a straight run of tied scores.

Both are None where FAR x n_neg < 1 (too few impostor pairs to measure that rate).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from evaluation.protocol import far_key, far_thresholds, roc_auc, roc_curve, tar_at_far

IJB_FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
PLOT_POINTS = 2000


def nearest_point_tar(fpr: np.ndarray, tpr: np.ndarray, fars: Sequence[float], n_neg: int, n_pos: int
                      ) -> dict[str, float | None]:
    """insightface's reading of a ROC: for each FAR, the TPR at the point of FPR nearest to it.

    fpr, tpr: [K] ROC points in increasing order (fractions); n_neg, n_pos: impostor and genuine pair
    counts. Among points equally near, the one of highest TPR. None where far * n_neg < 1 or n_pos = 0.
    """
    fpr = np.asarray(fpr, dtype=np.float64)
    tpr = np.asarray(tpr, dtype=np.float64)
    result: dict[str, float | None] = {}
    for far in fars:
        if math.floor(far * n_neg + 1e-9) < 1 or n_pos == 0 or fpr.size == 0:
            result[far_key(far)] = None
            continue
        distance = np.abs(fpr - far)
        nearest = np.flatnonzero(distance == distance.min())
        result[far_key(far)] = float(tpr[nearest].max())
    return result


def thin_roc(fpr: np.ndarray, tpr: np.ndarray, points: int = PLOT_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most about `points` ROC points for a plot: for FPR levels spaced evenly on a log axis (1e-8 .. 1)
    and on a linear one, the last point at or below each level, plus both ends. [K] -> [<= K]."""
    fpr = np.asarray(fpr, dtype=np.float64)
    tpr = np.asarray(tpr, dtype=np.float64)
    if fpr.size <= points:
        return fpr, tpr
    levels = np.r_[np.logspace(-8, 0, points // 2), np.linspace(0, 1, points // 2)]
    below = np.asarray(np.searchsorted(fpr, levels, side="right")) - 1
    keep = np.unique(np.r_[0, np.clip(below, 0, fpr.size - 1), fpr.size - 1])
    return fpr[keep], tpr[keep]


def ijb_metrics(scores: np.ndarray, labels: np.ndarray, fars: Sequence[float] = IJB_FARS
                ) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Record (`auc`, `tar_at_far`, `tar_at_far_nearest`, `thresholds`) and the full ROC (fpr, tpr) of scores [P]
    (higher = more alike) and labels [P] (True = same identity)."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels, dtype=bool).reshape(-1)
    fpr, tpr = roc_curve(scores, labels)
    n_pos = int(labels.sum())
    n_neg = int(labels.size - n_pos)
    record: dict[str, Any] = {
        "auc": roc_auc(scores, labels),
        "tar_at_far": tar_at_far(scores, labels, tuple(fars)),
        "tar_at_far_nearest": nearest_point_tar(fpr, tpr, fars, n_neg, n_pos),
        "thresholds": far_thresholds(scores, labels, tuple(fars)),  # template cosines: tar_at_far's thresholds
    }
    return record, fpr, tpr
