"""IJB 1:1 verification metrics from template-pair scores: ROC, AUC and TAR at FAR 1e-6 .. 1e-1.

Two readings of TAR@FAR are reported:

- `tar_at_far`: insightface's (`recognition/arcface_torch/eval_ijbc.py`), the one every published IJB
  table (arcface_torch, EKD, AdaDistill) uses: scikit-learn's ROC (`roc_curve`, collinear points
  dropped, a first point (0, 0) added), read from its highest-threshold end backwards, and for each FAR
  the TPR of the point whose FPR is nearest to it, ties to the higher TPR. It has a value at every FAR,
  even below 1 / impostors (the nearest point is then FPR 0, the TPR with no false accept), and the point
  may lie above FAR (e.g. FPR 1.4e-4 for FAR 1e-4). Compare it with published figures.
- `tar_at_far_bounded` (the project's rule, `evaluation.protocol.tar_at_far`): the threshold is the
  lowest at which at most floor(FAR x n_neg) impostor pairs score above it, and TAR is the fraction of
  genuine pairs above it: the ROC point of highest TPR whose FPR does not exceed FAR, an operating point
  whose false-accept rate is at most the one named; None where FAR x n_neg < 1 (too few impostor pairs
  to measure that rate). `thresholds` are this reading's (a deployable cosine per FAR).

The two agree where the ROC has a point at FAR exactly and differ by the step to the nearest point
elsewhere: at most the TPR change between neighbouring ROC points.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from evaluation.protocol import far_key, far_thresholds, roc_auc, roc_curve, tar_at_far

IJB_FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
PLOT_POINTS = 2000


def sklearn_roc(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's `roc_curve(labels, scores)` at its defaults: (fpr, tpr) [K] in increasing order.

    One point per distinct score (from the highest), points whose neighbours on both sides lie on one
    straight line with them dropped (`drop_intermediate=True`: the second differences of both counts
    are 0), and (0, 0) put first. Counts are integers, so the drop is exact.
    """
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.cumsum(y)[last]
    fps = 1 + last - tps
    if fps.size > 2:
        keep = np.r_[True, (np.diff(fps, 2) != 0) | (np.diff(tps, 2) != 0), True]
        fps, tps = fps[keep], tps[keep]
    fps, tps = np.r_[0, fps], np.r_[0, tps]
    return fps / max(int(fps[-1]), 1), tps / max(int(tps[-1]), 1)


def insightface_tar(scores: np.ndarray, labels: np.ndarray, fars: Sequence[float]) -> dict[str, float | None]:
    """insightface's IJB read-out of TAR@FAR (module docstring): for each FAR the TPR of the `sklearn_roc`
    point of FPR nearest to it, the later point in the ROC on a tie. scores [P], labels [P] bool; None
    only where there are no genuine or no impostor pairs."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels, dtype=bool).reshape(-1)
    n_pos = int(labels.sum())
    if n_pos == 0 or n_pos == labels.size:
        return {far_key(far): None for far in fars}
    fpr, tpr = sklearn_roc(scores, labels)
    fpr, tpr = fpr[::-1], tpr[::-1]  # as eval_ijbc.py: flipped, so the first of equal distances has the higher TPR
    return {far_key(far): float(tpr[int(np.argmin(np.abs(fpr - far)))]) for far in fars}


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
    """Record (`auc`, `tar_at_far` (insightface's reading), `tar_at_far_bounded`, `thresholds` (the bounded
    reading's)) and the full ROC (fpr, tpr, every distinct score) of scores [P] (higher = more alike) and
    labels [P] (True = same identity)."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels, dtype=bool).reshape(-1)
    fpr, tpr = roc_curve(scores, labels)
    record: dict[str, Any] = {
        "auc": roc_auc(scores, labels),
        "tar_at_far": insightface_tar(scores, labels, fars),
        "tar_at_far_bounded": tar_at_far(scores, labels, tuple(fars)),
        "thresholds": far_thresholds(scores, labels, tuple(fars)),  # template cosines of tar_at_far_bounded
    }
    return record, fpr, tpr
