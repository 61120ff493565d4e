"""Intra-class compactness and inter-class separation of an embedding space.

ICD-Face (Yu et al., ICCV 2023) motivates distillation by the gap between the teacher's and the
student's intra-class similarity distributions; these helpers measure that gap on held-out data.
All similarities are cosines of unit-norm embeddings.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from cache.identity import identity_csr

QUANTILES = (5, 25, 50, 75, 95)
DEFAULT_MAX_PAIRS = 1_000_000
_ROW_BLOCK = 1024


def _check(emb: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    emb = np.asarray(emb, dtype=np.float32)
    labels = np.asarray(labels).ravel()
    if emb.ndim != 2 or emb.shape[0] != labels.shape[0]:
        raise ValueError(f"emb must be [N, D] with N = len(labels), got {emb.shape} and {labels.shape}")
    return emb, labels


def intra_class_similarities(emb: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cosine of every same-identity pair i < j: emb [N, D] unit, labels [N] -> float64 [P_intra].

    Pairs are ordered by identity (sorted label), then by row i, then by row j.
    """
    emb, labels = _check(emb, labels)
    parts = []
    for label in np.unique(labels):
        rows = np.nonzero(labels == label)[0]
        if rows.size < 2:
            continue
        block = emb[rows] @ emb[rows].T
        upper_i, upper_j = np.triu_indices(rows.size, k=1)
        parts.append(block[upper_i, upper_j].astype(np.float64))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64)


def inter_pair_count(labels: np.ndarray) -> int:
    """Number of unordered pairs i < j whose labels differ."""
    _, counts = np.unique(np.asarray(labels).ravel(), return_counts=True)
    n = int(counts.sum())
    return (n * n - int(np.sum(counts.astype(np.int64) ** 2))) // 2


def _all_inter(emb: np.ndarray, labels: np.ndarray) -> np.ndarray:
    parts = []
    for start in range(0, emb.shape[0], _ROW_BLOCK):
        stop = min(start + _ROW_BLOCK, emb.shape[0])
        sims = emb[start:stop] @ emb.T
        rows = np.arange(start, stop)[:, None]
        keep = (np.arange(emb.shape[0])[None, :] > rows) & (labels[start:stop, None] != labels[None, :])
        parts.append(sims[keep].astype(np.float64))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64)


def _sample_inter(emb: np.ndarray, labels: np.ndarray, max_pairs: int, seed: int) -> np.ndarray:
    """`max_pairs` inter-class pairs drawn uniformly (with replacement), deterministic in `seed`.

    Row i is drawn with probability proportional to its number of other-identity partners, then j
    uniformly among rows of other identities, which makes every ordered inter pair equally likely.
    """
    rng = np.random.default_rng(seed)
    classes, class_of = np.unique(labels, return_inverse=True)
    order, offsets = identity_csr(class_of, len(classes))
    starts, counts = offsets[:-1], np.diff(offsets)
    n = labels.shape[0]
    partners = (n - counts[class_of]).astype(np.float64)
    i = rng.choice(n, size=max_pairs, p=partners / partners.sum())
    c = class_of[i]
    r = (rng.random(max_pairs) * (n - counts[c])).astype(np.int64)
    r = np.minimum(r, n - counts[c] - 1)
    j = order[np.where(r < starts[c], r, r + counts[c])]
    return np.einsum("pd,pd->p", emb[i], emb[j]).astype(np.float64)


def inter_class_similarities(
    emb: np.ndarray, labels: np.ndarray, max_pairs: int = DEFAULT_MAX_PAIRS, seed: int = 0
) -> np.ndarray:
    """Cosine of different-identity pairs: all pairs i < j when there are at most `max_pairs`, else
    `max_pairs` pairs sampled uniformly with a generator seeded by `seed`. Returns float64 [P_inter].
    """
    emb, labels = _check(emb, labels)
    if inter_pair_count(labels) <= max_pairs:
        return _all_inter(emb, labels)
    return _sample_inter(emb, labels, max_pairs, seed)


def describe(values: np.ndarray) -> dict[str, float | int | None]:
    """mean, std (population), quantiles p5..p95 and count of a 1-D sample; None values when empty."""
    values = np.asarray(values, dtype=np.float64).ravel()
    stats: dict[str, float | int | None] = {"count": int(values.size)}
    empty = values.size == 0
    stats["mean"] = None if empty else float(values.mean())
    stats["std"] = None if empty else float(values.std())
    for q in QUANTILES:
        stats[f"p{q}"] = None if empty else float(np.percentile(values, q))
    return stats


def similarity_stats(
    emb: np.ndarray, labels: np.ndarray, max_pairs: int = DEFAULT_MAX_PAIRS, seed: int = 0
) -> dict[str, Any]:
    """Intra- and inter-class cosine statistics of unit embeddings emb [N, D] with identities labels [N].

    Returns {"intra": describe(...), "inter": describe(...), "inter_sampled": bool,
    "separation": intra mean - inter mean (None if either is empty)}.
    """
    intra = describe(intra_class_similarities(emb, labels))
    inter = describe(inter_class_similarities(emb, labels, max_pairs, seed))
    separation = None
    if intra["mean"] is not None and inter["mean"] is not None:
        separation = float(intra["mean"]) - float(inter["mean"])
    return {
        "intra": intra,
        "inter": inter,
        "inter_sampled": inter_pair_count(labels) > max_pairs,
        "separation": separation,
    }


def _difference(teacher: float | int | None, student: float | int | None) -> float | None:
    if teacher is None or student is None:
        return None
    return float(teacher) - float(student)


def compactness_gap(student_stats: dict[str, Any], teacher_stats: dict[str, Any]) -> dict[str, float | None]:
    """Teacher minus student for the headline numbers of two `similarity_stats` results.

    Keys: intra_mean, intra_std, intra_p50, inter_mean, inter_std, inter_p50, separation. A positive
    intra_mean gap means the student's identities are less compact than the teacher's.
    """
    gap: dict[str, float | None] = {}
    for side in ("intra", "inter"):
        for key in ("mean", "std", "p50"):
            gap[f"{side}_{key}"] = _difference(teacher_stats[side][key], student_stats[side][key])
    gap["separation"] = _difference(teacher_stats["separation"], student_stats["separation"])
    return gap


def sample_rows(labels: np.ndarray, done: np.ndarray, max_rows: int, seed: int) -> np.ndarray:
    """Rows of whole identities in a seeded random order until `max_rows` are taken, sorted: [n] int64."""
    usable = np.flatnonzero(done)
    chosen: list[int] = []
    for c in np.random.default_rng(seed).permutation(np.unique(labels[usable])):
        chosen.extend(usable[labels[usable] == c].tolist())
        if len(chosen) >= max_rows:
            break
    return np.asarray(sorted(chosen[:max_rows]), dtype=np.int64)
