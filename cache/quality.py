"""Data-quality report of a teacher cache: identity compactness and suspected label noise.

A row is a suspected label-noise row when its teacher embedding is nearer (cosine) another
identity's centre than its own. Its own centre is taken without the row itself (leave-one-out), so
that a wrong image cannot pull its identity's centre towards itself; this matters for identities
with few images, and singletons are never suspected. Other identities' centres are found by a FAISS
inner-product search of every row against the normalised centres: exact (`IndexFlatIP`) up to
`EXACT_CENTRES` identities; above that approximate (`centre_index`: PCA to 128 dimensions, an IVF of
about 4 sqrt(C) lists, 8 searched, the best 16 candidates re-ranked exactly), since exact search of
MS1MV2's 5.8M rows against its 85.7k centres is 2.5e14 multiply-adds, more than an hour on two cores.
The approximate search can miss a row's nearest other centre and so under-count suspects;
`bench/scale.py` measures how many of the exact search's suspects it finds. Measured on 8,192 rows
against 85,742 centres (5% of them filed under a random other identity): with centres that share
structure (drawn around 256 group centres) it found 100% of those rows' true identity (search time
scaled to 5.8M rows: 163 s); with isotropic random centres, the worst case for PCA and IVF, 66%.

The report streams: embeddings are read in blocks of `BLOCK_ROWS` rows through a `cache.rows.RowSource`
(two passes: per-identity sums, then cosines and the centre search), so memory is the [C, D] sums
and centres plus a few [N] vectors, whatever N.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import faiss
import numpy as np
import torch

from cache.rows import RowSource, as_row_source, blocks

BLOCK_ROWS = 65536
DIGITS = 4
EXACT_CENTRES = 20000  # above this many identities the centre search is approximate (`centre_index`)
CENTRE_NPROBE = 8
CENTRE_PCA_DIM = 128
CENTRE_REFINE = 8
CENTRE_TRAIN_SEED = 1234
SPREAD_SAMPLE = 1000  # rows (spread over the cache) whose mean pairwise cosine the report states
# a teacher whose embeddings of different images have a mean cosine above this is not telling faces apart (a
# working face model: about 0.0 to 0.3; the MobileFace teacher fed pre-normalised instead of raw pixels: 0.9995)
COLLAPSED_COSINE = 0.9


def mean_pairwise_cosine(units: np.ndarray) -> float:
    """Mean cosine over the distinct pairs of unit rows `units` [n, D] (n >= 2), float64; NaN for fewer rows."""
    e = np.asarray(units, dtype=np.float64)
    n = len(e)
    if n < 2:
        return float("nan")
    total = e.sum(axis=0)
    return float((total @ total - np.einsum("ij,ij->", e, e)) / (n * (n - 1)))


def spread_rows(num_rows: int, count: int = SPREAD_SAMPLE) -> np.ndarray:
    """Up to `count` row indices spread evenly over `num_rows` rows, increasing."""
    return np.unique(np.linspace(0, num_rows - 1, num=min(count, num_rows)).round().astype(np.int64))


def identity_sums(source: RowSource, labels: np.ndarray, num_classes: int,
                  block_rows: int = BLOCK_ROWS) -> np.ndarray:
    """Per-identity sums of embeddings: [C, D] float64 over the rows with a label >= 0, read block by block.

    Each block is summed per identity in float32 (at most `block_rows` rows a sum), the totals in float64.
    """
    sums = np.zeros((num_classes, source.dim), dtype=np.float64)
    for start, block in blocks(source, block_rows):
        lab = labels[start:start + len(block)]
        keep = lab >= 0
        if not keep.any():
            continue
        present, inverse = np.unique(lab[keep], return_inverse=True)
        part = torch.zeros((len(present), source.dim), dtype=torch.float32)
        part.index_add_(0, torch.from_numpy(inverse.reshape(-1)), torch.from_numpy(block[keep]))
        sums[present] += part.numpy()
    return sums


def own_centre_cosines(e: np.ndarray, lab: np.ndarray, sums: np.ndarray,
                       sum_norm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine of each row to its identity's centre, with and without the row itself.

    e [b, D] unit rows (float32), lab [b] labels >= 0, sums [C, D] per-identity sums (float32 is
    enough: the dot products are then rounded to ~1e-7 relative) and their norms [C] float64.
    Returns (full [b], leave_one_out [b]) float64; leave-one-out is NaN for a row alone in its identity.
    """
    e_t = torch.from_numpy(np.ascontiguousarray(e, dtype=np.float32))
    s_t = torch.from_numpy(np.ascontiguousarray(sums, dtype=np.float32))
    lab_t = torch.from_numpy(np.asarray(lab, dtype=np.int64))
    dot = (e_t * s_t.index_select(0, lab_t)).sum(1).double().numpy()
    self_sq = e_t.double().pow(2).sum(1).numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        full = dot / sum_norm[lab]
        rest_sq = sum_norm[lab] ** 2 - 2.0 * dot + self_sq
        loo = np.where(rest_sq > 1e-12, (dot - self_sq) / np.sqrt(rest_sq), np.nan)
    return full, loo


def centre_index(centres: np.ndarray, exact_max: int = EXACT_CENTRES, nprobe: int = CENTRE_NPROBE) -> faiss.Index:
    """An inner-product index over centres [P, D] (positions 0..P-1): exact up to `exact_max` rows, else approximate.

    Approximate: PCA to `CENTRE_PCA_DIM` dimensions, an IVF of about 4 sqrt(P) lists over them (`nprobe`
    searched), and the `CENTRE_REFINE` x k best candidates re-ranked by their exact inner product.
    """
    centres = np.ascontiguousarray(centres, dtype=np.float32)
    count, dim = centres.shape
    if count <= exact_max:
        index: faiss.Index = faiss.IndexFlatIP(dim)
        index.add(centres)
        return index
    lists = max(1, int(round(4 * math.sqrt(count))))
    spec = f"PCA{min(CENTRE_PCA_DIM, dim)},IVF{lists},Flat,RFlat" if dim > CENTRE_PCA_DIM else f"IVF{lists},Flat,RFlat"
    index = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.extract_index_ivf(index)
    ivf.cp.seed = CENTRE_TRAIN_SEED
    index.train(centres)
    index.add(centres)
    ivf.nprobe = min(nprobe, lists)
    refine: Any = faiss.downcast_index(index)
    refine.k_factor = CENTRE_REFINE
    return index


def nearest_other_centre(index: faiss.Index, e: np.ndarray, lab: np.ndarray,
                         present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row of e [b, D], the nearest centre of another identity: (label [b] int64, cosine [b] float64).

    `index` holds the centres of the labels `present` [P >= 2] in that order (`centre_index`). The two
    nearest centres are searched: the first unless it is the row's own identity. A row for which the
    search returns no other centre (possible with IVF) gets label -1 and cosine -inf.
    """
    sims, idx = index.search(np.ascontiguousarray(e, dtype=np.float32), 2)
    found = np.where(idx >= 0, present[np.maximum(idx, 0)], -1)
    col = (found[:, 0] == lab).astype(np.intp)
    pick = np.arange(len(lab))
    other = found[pick, col]
    cosine = np.where(other >= 0, sims[pick, col], -np.inf).astype(np.float64)
    return other, cosine


def _neighbour_labels(index: faiss.Index, source: RowSource, labels: np.ndarray, row: int,
                      count: int) -> list[int]:
    """Labels of the `count` nearest rows of `row` in an index whose ids are rows of `source`."""
    _, idx = index.search(source.read(row, row + 1), count + 1)
    near = [int(i) for i in idx[0] if 0 <= i < len(labels) and i != row][:count]
    return [int(labels[i]) for i in near]


def quality_report(emb: np.ndarray | RowSource, labels: np.ndarray, keys: Sequence[str],
                   index: faiss.Index | None = None, skipped_keys: Iterable[str] = (), top: int = 100,
                   neighbours: int = 5, block_rows: int = BLOCK_ROWS,
                   exact_centres: int = EXACT_CENTRES) -> dict[str, Any]:
    """A JSON-serialisable data-quality summary of unit-norm teacher embeddings.

    emb [N, D] (an array or a `RowSource`, read in blocks), labels [N] (negative: a row left out, e.g.
    a skipped image), keys [N] (indexable; only the listed suspects' keys are read); `index`
    (optional): a FAISS index over the same rows with ids = rows, used to list each suspect's nearest
    rows' labels; `skipped_keys`: images that could not be read; `exact_centres`: the most identities
    searched exactly (`centre_index`). Returns compactness per identity with two or more rows
    (mean cosine of its rows to its normalised centre, row count), their mean, the count of identities
    with one row (neither scored nor suspected: a lone row has no centre but itself), up to `top`
    suspected label-noise rows (most suspicious first) with their key, label, own-centre cosine
    (leave-one-out), nearest other identity and its cosine, and the mean pairwise cosine of
    `SPREAD_SAMPLE` rows spread over the cache (near 1: the teacher tells no faces apart).
    """
    source = as_row_source(emb)
    labels = np.asarray(labels).astype(np.int64)
    skipped = [str(k) for k in skipped_keys]
    if labels.shape != (source.num_rows,) or len(keys) != source.num_rows:
        raise ValueError(f"emb [N, D], labels [N] and keys [N] disagree: {source.num_rows} rows, "
                         f"{labels.shape}, {len(keys)}")
    kept = labels >= 0
    report: dict[str, Any] = {"rows": int(kept.sum()), "identities": 0, "single_image_identities": 0,
                              "mean_compactness": None, "identity_compactness": [], "suspected_label_noise": [],
                              "suspected_count": 0, "mean_pairwise_cosine": None,
                              "skipped": skipped, "skipped_count": len(skipped)}
    if not kept.any():
        return report
    num_classes = int(labels.max()) + 1
    counts = np.bincount(labels[kept], minlength=num_classes)
    present = np.flatnonzero(counts > 0)
    sums = identity_sums(source, labels, num_classes, block_rows)
    sum_norm = np.linalg.norm(sums, axis=1)
    centres = np.divide(sums, sum_norm[:, None], out=np.zeros_like(sums), where=sum_norm[:, None] > 0)
    sums32 = sums.astype(np.float32)
    index_c = centre_index(centres[present], exact_centres) if len(present) >= 2 else None
    full_sum = np.zeros(num_classes, dtype=np.float64)
    other = np.full(len(labels), -1, dtype=np.int64)
    other_cos = np.full(len(labels), np.nan)
    loo = np.full(len(labels), np.nan)
    spread = spread_rows(len(labels))
    spread = spread[kept[spread]]
    sample: list[np.ndarray] = []
    for start, block in blocks(source, block_rows):
        rows = start + np.flatnonzero(kept[start:start + len(block)])
        if not len(rows):
            continue
        e, lab = block[rows - start], labels[rows]
        full, own = own_centre_cosines(e, lab, sums32, sum_norm)
        loo[rows] = np.where(counts[lab] >= 2, own, np.nan)  # a lone row has no centre but itself
        full_sum += np.bincount(lab, weights=full, minlength=num_classes)
        if index_c is not None:
            other[rows], other_cos[rows] = nearest_other_centre(index_c, e, lab, present)
        picked = spread[(spread >= start) & (spread < start + len(block))]
        sample.append(np.asarray(block[picked - start], dtype=np.float32))
    scored = present[counts[present] >= 2]
    compactness = full_sum[scored] / counts[scored]
    report["identities"] = int(len(present))
    report["single_image_identities"] = int(len(present) - len(scored))
    report["mean_compactness"] = round(float(compactness.mean()), DIGITS) if len(scored) else None
    report["identity_compactness"] = [
        {"label": int(c), "count": int(counts[c]), "compactness": round(float(v), DIGITS)}
        for c, v in zip(scored.tolist(), compactness.tolist(), strict=True)
    ]
    if len(spread) >= 2:
        report["mean_pairwise_cosine"] = round(mean_pairwise_cosine(np.concatenate(sample)), DIGITS)
    if index_c is None:
        return report
    with np.errstate(invalid="ignore"):
        margin = other_cos - loo
        suspect = np.flatnonzero(margin > 0)
    suspect = suspect[np.lexsort((suspect, -margin[suspect]))]
    report["suspected_count"] = int(len(suspect))
    listed = []
    for row in suspect[:top].tolist():
        entry: dict[str, Any] = {
            "key": str(keys[row]), "label": int(labels[row]),
            "own_cosine": round(float(loo[row]), DIGITS),
            "nearest_label": int(other[row]), "nearest_cosine": round(float(other_cos[row]), DIGITS),
            "margin": round(float(margin[row]), DIGITS),
        }
        if index is not None:
            near = _neighbour_labels(index, source, labels, row, neighbours)
            entry["neighbour_labels"] = near
            entry["neighbour_agreement"] = round(sum(x == labels[row] for x in near) / max(1, len(near)), DIGITS)
        listed.append(entry)
    report["suspected_label_noise"] = listed
    return report
