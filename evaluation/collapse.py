"""Embedding collapse at a glance: the mean cosine of a set's genuine and impostor pairs.

A student whose unseen faces all look alike scores every pair high: its impostor pairs have a mean
cosine far above a healthy model's (near 0; the MobileFace ONNX teacher on held-out LFW DevTrain people:
0.03, a collapsed student there: 0.59 to 0.92). Accuracy and AUC can stay well above chance while this
happens, so `evaluate` states both means on every set and warns when the impostor mean passes
`COLLAPSE_IMPOSTOR_COSINE`.
"""
from __future__ import annotations

from typing import Any

import numpy as np

COLLAPSE_IMPOSTOR_COSINE = 0.5  # impostor pairs this alike on average: the embedding has collapsed
# an AUC below this tells the set's people apart little better than a coin (0.5): `evaluate` says so beside it
CHANCE_AUC = 0.6


def at_chance(auc: float | None) -> bool:
    """Whether a set's AUC is near chance (below `CHANCE_AUC`); False when there is none."""
    return auc is not None and auc < CHANCE_AUC


def score_to_cosine(score: float | None) -> float | None:
    """The protocol's score (minus the squared L2 distance of unit embeddings) as a cosine: 1 + score / 2."""
    return None if score is None else 1.0 + float(score) / 2.0


def pair_cosines(scores: np.ndarray, issame: np.ndarray) -> dict[str, Any]:
    """Mean cosine of genuine and of impostor pairs from the protocol's pair scores.

    scores [P]: minus the squared L2 distance of unit embeddings (`evaluation.verify`), so cosine =
    1 + score / 2; issame [P] bool. Returns {"genuine_mean", "impostor_mean", "collapsed"}, a mean None
    when the set has no pair of that kind; collapsed is True when impostor_mean > COLLAPSE_IMPOSTOR_COSINE.
    """
    cos = 1.0 + np.asarray(scores, dtype=np.float64) / 2.0
    same = np.asarray(issame, dtype=bool)
    genuine = float(cos[same].mean()) if same.any() else None
    impostor = float(cos[~same].mean()) if (~same).any() else None
    return {"genuine_mean": genuine, "impostor_mean": impostor,
            "collapsed": impostor is not None and impostor > COLLAPSE_IMPOSTOR_COSINE}


def pair_cosine_gap(student_scores: np.ndarray, teacher_scores: np.ndarray) -> float:
    """Mean |cos_student - cos_teacher| over a set's pairs: how far the student's pair similarities sit
    from the teacher's (0: the teacher's relations exactly; a collapsed student on LFW: about 0.8).

    Both [P] in the protocol's score units (minus squared L2 distance of unit embeddings, so the cosine
    difference is half the score difference). Returns a float in [0, 2]; the set must have pairs.
    """
    s, t = np.asarray(student_scores, dtype=np.float64), np.asarray(teacher_scores, dtype=np.float64)
    if s.shape != t.shape or s.size == 0:
        raise ValueError(f"pair_cosine_gap: expected two equal non-empty [P] score arrays, got {s.shape} and {t.shape}")
    return float(np.abs(s - t).mean() / 2.0)
