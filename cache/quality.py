"""Data-quality report of a teacher cache: identity compactness and suspected label noise.

A row is a suspected label-noise row when its teacher embedding is nearer (cosine) another
identity's centre than its own. Its own centre is taken without the row itself (leave-one-out), so
that a wrong image cannot pull its identity's centre towards itself; this matters for identities
with few images, and singletons are never suspected. Other identities' centres are found by an
exact FAISS inner-product search of every row against an `IndexFlatIP` of the normalised centres.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import faiss
import numpy as np

from cache.identity import identity_csr

BLOCK_ROWS = 65536
DIGITS = 4


def identity_sums(emb: np.ndarray, rows: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per-identity sums of embeddings: [C, D] float64 from emb [N, D] and the identity CSR."""
    num_classes = len(offsets) - 1
    sums = np.zeros((num_classes, emb.shape[1]), dtype=np.float64)
    sorted_labels = np.repeat(np.arange(num_classes), np.diff(offsets))
    for start in range(0, len(rows), BLOCK_ROWS):
        lab = sorted_labels[start:start + BLOCK_ROWS]
        block = emb[rows[start:start + BLOCK_ROWS]].astype(np.float64)
        heads = np.flatnonzero(np.concatenate([[True], lab[1:] != lab[:-1]]))
        sums[lab[heads]] += np.add.reduceat(block, heads, axis=0)
    return sums


def own_centre_cosines(emb: np.ndarray, labels: np.ndarray, sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine of each row to its identity's centre, with and without the row itself.

    emb [N, D] unit rows, labels [N], sums [C, D] per-identity sums. Returns (full [N], leave_one_out
    [N]); leave-one-out is NaN for a row alone in its identity.
    """
    sum_norm = np.linalg.norm(sums, axis=1)
    full = np.empty(len(labels), dtype=np.float64)
    loo = np.empty(len(labels), dtype=np.float64)
    for start in range(0, len(labels), BLOCK_ROWS):
        e = emb[start:start + BLOCK_ROWS].astype(np.float64)
        lab = labels[start:start + BLOCK_ROWS]
        dot = np.einsum("nd,nd->n", e, sums[lab])
        self_sq = np.einsum("nd,nd->n", e, e)
        with np.errstate(divide="ignore", invalid="ignore"):
            full[start:start + len(lab)] = dot / sum_norm[lab]
            rest_sq = sum_norm[lab] ** 2 - 2.0 * dot + self_sq
            loo[start:start + len(lab)] = np.where(rest_sq > 1e-12, (dot - self_sq) / np.sqrt(rest_sq), np.nan)
    return full, loo


def nearest_other_centre(emb: np.ndarray, labels: np.ndarray, centres: np.ndarray,
                         present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row, the nearest centre of another identity: (label [N] int64, cosine [N] float64).

    centres [C, D] unit rows; present [P >= 2] labels that own rows (only their centres are searched).
    The two nearest centres are searched: the first unless it is the row's own identity.
    """
    index = faiss.IndexFlatIP(centres.shape[1])
    index.add(np.ascontiguousarray(centres[present], dtype=np.float32))
    other = np.empty(len(labels), dtype=np.int64)
    cosine = np.empty(len(labels), dtype=np.float64)
    for start in range(0, len(labels), BLOCK_ROWS):
        stop = min(start + BLOCK_ROWS, len(labels))
        sims, idx = index.search(np.ascontiguousarray(emb[start:stop], dtype=np.float32), 2)
        found = present[idx]
        col = (found[:, 0] == labels[start:stop]).astype(np.intp)
        pick = np.arange(stop - start)
        other[start:stop] = found[pick, col]
        cosine[start:stop] = sims[pick, col]
    return other, cosine


def _neighbour_labels(index: faiss.Index, emb: np.ndarray, labels: np.ndarray, row: int,
                      count: int) -> list[int]:
    """Labels of the `count` nearest rows of `row` in an index whose ids are positions in `emb`."""
    _, idx = index.search(np.ascontiguousarray(emb[row:row + 1], dtype=np.float32), count + 1)
    near = [int(i) for i in idx[0] if 0 <= i < len(labels) and i != row][:count]
    return [int(labels[i]) for i in near]


def quality_report(emb: np.ndarray, labels: np.ndarray, keys: Sequence[str], index: faiss.Index | None = None,
                   skipped_keys: Iterable[str] = (), top: int = 100, neighbours: int = 5) -> dict[str, Any]:
    """A JSON-serialisable data-quality summary of unit-norm teacher embeddings.

    emb [N, D], labels [N], keys [N]: the rows to judge (skipped images left out); `index` (optional):
    a FAISS index over the same rows with ids 0..N-1, used to list each suspect's nearest rows' labels;
    `skipped_keys`: images that could not be read. Returns compactness per identity (mean cosine of
    its rows to its normalised centre, row count), their mean, and up to `top` suspected label-noise
    rows (most suspicious first) with their key, label, own-centre cosine (leave-one-out), nearest
    other identity and its cosine.
    """
    emb = np.asarray(emb, dtype=np.float32)
    labels = np.asarray(labels).astype(np.int64)
    keys = list(keys)
    skipped = [str(k) for k in skipped_keys]
    if emb.ndim != 2 or labels.shape != (emb.shape[0],) or len(keys) != emb.shape[0]:
        raise ValueError(f"emb [N, D], labels [N] and keys [N] disagree: {emb.shape}, {labels.shape}, {len(keys)}")
    if len(labels) and labels.min() < 0:
        raise ValueError(f"row {int(np.argmin(labels))} has a negative label; leave skipped rows out")
    report: dict[str, Any] = {"rows": int(len(labels)), "identities": 0, "mean_compactness": None,
                              "identity_compactness": [], "suspected_label_noise": [], "suspected_count": 0,
                              "skipped": skipped, "skipped_count": len(skipped)}
    if len(labels) == 0:
        return report
    num_classes = int(labels.max()) + 1
    rows, offsets = identity_csr(labels, num_classes)
    counts = np.diff(offsets)
    present = np.flatnonzero(counts > 0)
    sums = identity_sums(emb, rows, offsets)
    full, loo = own_centre_cosines(emb, labels, sums)
    compactness = np.bincount(labels, weights=full, minlength=num_classes)[present] / counts[present]
    report["identities"] = int(len(present))
    report["mean_compactness"] = round(float(compactness.mean()), DIGITS)
    report["identity_compactness"] = [
        {"label": int(c), "count": int(counts[c]), "compactness": round(float(v), DIGITS)}
        for c, v in zip(present.tolist(), compactness.tolist(), strict=True)
    ]
    if len(present) < 2:
        return report
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    centres = np.divide(sums, norms, out=np.zeros_like(sums), where=norms > 0)
    other, other_cos = nearest_other_centre(emb, labels, centres, present)
    with np.errstate(invalid="ignore"):
        margin = other_cos - loo
        suspect = np.flatnonzero(margin > 0)
    suspect = suspect[np.lexsort((suspect, -margin[suspect]))]
    report["suspected_count"] = int(len(suspect))
    listed = []
    for row in suspect[:top].tolist():
        entry: dict[str, Any] = {
            "key": keys[row], "label": int(labels[row]),
            "own_cosine": round(float(loo[row]), DIGITS),
            "nearest_label": int(other[row]), "nearest_cosine": round(float(other_cos[row]), DIGITS),
            "margin": round(float(margin[row]), DIGITS),
        }
        if index is not None:
            near = _neighbour_labels(index, emb, labels, row, neighbours)
            entry["neighbour_labels"] = near
            entry["neighbour_agreement"] = round(sum(x == labels[row] for x in near) / max(1, len(near)), DIGITS)
        listed.append(entry)
    report["suspected_label_noise"] = listed
    return report
