"""Rows grouped by identity as a CSR table (`identity_rows`, `identity_offsets` of the cache)."""
from __future__ import annotations

import numpy as np


def identity_csr(labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Group rows by label: identity c owns `rows[offsets[c]:offsets[c + 1]]`, in increasing row order.

    labels: [N] int, 0..num_classes-1; a negative label marks a row left out (a skipped image).
    Returns rows [n] int64 (n = rows with a label >= 0) and offsets [num_classes + 1] int64.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    labels = labels.astype(np.int64, copy=False)
    if len(labels) and labels.max() >= num_classes:
        row = int(np.argmax(labels >= num_classes))
        raise ValueError(f"row {row} has label {int(labels[row])}, outside 0..{num_classes - 1}")
    kept = np.flatnonzero(labels >= 0)
    order = kept[np.argsort(labels[kept], kind="stable")]
    counts = np.bincount(labels[kept], minlength=num_classes)
    offsets = np.zeros(num_classes + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return order.astype(np.int64), offsets
