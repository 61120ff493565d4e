"""IJB feature pooling as insightface's IJB 1:1 evaluation does it: image -> media -> template.

1. image feature f_i = v0_i + v1_i (flip test) or v0_i, the model's raw outputs for the image and its
   horizontal flip; without "norm score" f_i is first scaled to unit length; with "detector score"
   it is multiplied by the detector's face score s_i.
2. template feature T_t = normalize( sum over media m of t of mean_{i in (t, m)} f_i ), i.e.
   sum_i f_i / n_(t, m(i)) over the images of t, n_(t, m) the number of images of media m in t.

A zero vector stays zero where insightface would divide by its zero norm (its per-image division
gives NaN there, its template normalisation 0).
"""
from __future__ import annotations

import numpy as np

ROW_BLOCK = 65536  # rows pooled at a time: bounds the float64 temporaries to ROW_BLOCK x D


def l2_normalize_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm: [n, D] -> [n, D] in x's float dtype; all-zero rows stay zero."""
    x = np.asarray(x)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    return (x / np.where(norms > 0, norms, 1.0)[:, None]).astype(x.dtype, copy=False)


def image_features(views: np.ndarray, detector_scores: np.ndarray, use_flip_test: bool = True,
                   use_norm_score: bool = True, use_detector_score: bool = True) -> np.ndarray:
    """Per-image features from raw model outputs (step 1 of the module docstring).

    views: float [n, 2, D], raw embeddings of each image (view 0) and its horizontal flip (view 1);
    detector_scores: [n], the detector's face score (unitless, in [0, 1] in the IJB release).
    Returns float32 [n, D].
    """
    views = np.asarray(views, dtype=np.float32)
    if views.ndim != 3 or views.shape[1] != 2:
        raise ValueError(f"views must be [n, 2, D], got {views.shape}")
    scores = np.asarray(detector_scores, dtype=np.float32).reshape(-1)
    if scores.shape[0] != views.shape[0]:
        raise ValueError(f"{views.shape[0]} images but {scores.shape[0]} detector scores")
    feats = views[:, 0] + views[:, 1] if use_flip_test else views[:, 0].copy()
    if not use_norm_score:
        feats = l2_normalize_rows(feats)
    if use_detector_score:
        feats = feats * scores[:, None]
    return feats


def media_weights(templates: np.ndarray, medias: np.ndarray) -> np.ndarray:
    """1 / n_(t, m) for each image: the number of images sharing its (template, media); [L] -> float64 [L]."""
    templates = np.asarray(templates, dtype=np.int64).reshape(-1)
    medias = np.asarray(medias, dtype=np.int64).reshape(-1)
    if templates.shape != medias.shape:
        raise ValueError(f"templates {templates.shape} and medias {medias.shape} differ in length")
    keys = np.stack([templates, medias], axis=1)
    _, group, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    return 1.0 / counts[group.reshape(-1)].astype(np.float64)


def segment_sums(values: np.ndarray, weights: np.ndarray, segments: np.ndarray, count: int) -> np.ndarray:
    """sum_i weights_i * values_i per segment -> float64 [count, D].

    values [n, D], weights [n], segments int [n] in [0, count).
    Summed in blocks of ROW_BLOCK rows, each sorted by segment and reduced with `np.add.reduceat`.
    """
    out = np.zeros((count, values.shape[1]), dtype=np.float64)
    for start in range(0, values.shape[0], ROW_BLOCK):
        seg = segments[start:start + ROW_BLOCK]
        order = np.argsort(seg, kind="stable")
        seg = seg[order]
        block = values[start:start + ROW_BLOCK][order].astype(np.float64)
        block *= weights[start:start + ROW_BLOCK][order, None]
        heads = np.r_[0, np.flatnonzero(np.diff(seg)) + 1]
        out[seg[heads]] += np.add.reduceat(block, heads, axis=0)
    return out


def template_features(feats: np.ndarray, templates: np.ndarray, medias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit template features (step 2 of the module docstring).

    feats: float [L, D] image features (one row per `tid_mid` line); templates, medias: int [L].
    Returns (template ids, sorted, int64 [T]; their features, float32 [T, D], unit norm or zero).
    """
    feats = np.asarray(feats)
    templates = np.asarray(templates, dtype=np.int64).reshape(-1)
    if feats.ndim != 2 or feats.shape[0] != templates.shape[0]:
        raise ValueError(f"feats must be [{templates.shape[0]}, D], got {feats.shape}")
    ids, rows = np.unique(templates, return_inverse=True)
    sums = segment_sums(feats, media_weights(templates, medias), rows.reshape(-1), ids.shape[0])
    return ids, l2_normalize_rows(sums).astype(np.float32)
