"""MarginDistillation's teacher class centres: computed once per run from the cache, kept in the run directory.

The centre of class c is `losses.teacher_class_centres` over the cached teacher embeddings of the
class's usable rows, both flip views (the teacher network is never loaded). They are written atomically
to `<run.dir>/teacher_centres.npz` (arrays `centres` [C, D_t] float32 and `key`) and read back by every
later run in that directory (a resumed one, one started again with --overwrite) whose key matches: the
sha256 of the cache fingerprint, the usable rows, their labels and the shape. Any other file there
(another cache, another data set, a damaged file) is replaced by a fresh computation. Key and centres
share one file, so a crash can never pair the centres of one cache with the key of another.
"""
from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.atomic import atomic_path
from losses import teacher_class_centres
from stages.training.targets import TargetProvider

log = logging.getLogger(__name__)

CENTRES_FILE = "teacher_centres.npz"
CHUNK_ROWS = 65536  # cached rows (x 2 views) read at once: 256 MiB of float32 at D = 512


def centres_key(fingerprint: dict[str, Any], rows: np.ndarray, labels: np.ndarray, num_classes: int,
                dim: int) -> str:
    """sha256 naming what the centres are computed from: cache fingerprint, usable rows and their labels, shape."""
    h = hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode())
    h.update(np.ascontiguousarray(rows, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(labels[rows], dtype=np.int64).tobytes())
    h.update(f"{num_classes}x{dim}".encode())
    return h.hexdigest()


def compute_centres(provider: TargetProvider, rows: np.ndarray, labels: np.ndarray, num_classes: int,
                    chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """[C, D_t] float32 unit centres (zero rows for classes without a usable row), from a few classes at a time.

    rows: usable dataset rows; labels: [N] dataset labels in 0..C-1. Each chunk holds whole classes (at
    least one), so every centre is one `teacher_class_centres` call over all its rows' two views.
    """
    order = rows[np.argsort(labels[rows], kind="stable")]
    sorted_labels = labels[order]
    starts = np.searchsorted(sorted_labels, np.arange(num_classes + 1))  # class c: order[starts[c]:starts[c + 1]]
    out = np.zeros((num_classes, provider.embedding_size), dtype=np.float32)
    first = 0
    while first < num_classes:
        last = max(first + 1, int(np.searchsorted(starts, starts[first] + chunk_rows, side="right")) - 1)
        seg = order[starts[first]:starts[last]]
        if len(seg):
            views = [provider.lookup(seg, np.full(len(seg), f, dtype=np.uint8)) for f in (0, 1)]
            seg_labels = torch.from_numpy(np.tile(sorted_labels[starts[first]:starts[last]] - first, 2))
            out[first:last] = teacher_class_centres(torch.cat(views).float(), seg_labels, last - first).numpy()
        first = last
    return out


def read_centres(path: Path, key: str, shape: tuple[int, int]) -> np.ndarray | None:
    """The centres stored at `path` when its key and shape match, else None (a damaged file is logged)."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            stored_key, centres = str(z["key"]), np.asarray(z["centres"], dtype=np.float32)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        log.warning("%s is unreadable (%s): computing the teacher centres again", path, e)
        return None
    if stored_key != key or centres.shape != shape:
        log.info("%s belongs to another cache or data set: computing the teacher centres again", path)
        return None
    return centres


def write_centres(path: Path, centres: np.ndarray, key: str) -> None:
    """Write centres and key to `path` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, centres=centres, key=np.array(key))


def teacher_centres(run_dir: Path, provider: TargetProvider, fingerprint: dict[str, Any], rows: np.ndarray,
                    labels: np.ndarray, num_classes: int) -> np.ndarray:
    """The run's [C, D_t] teacher centres: read from `<run_dir>/teacher_centres.npz` when it matches, else
    computed from the cache (through `provider`) and written there."""
    path = run_dir / CENTRES_FILE
    key = centres_key(fingerprint, rows, labels, num_classes, provider.embedding_size)
    centres = read_centres(path, key, (num_classes, provider.embedding_size))
    if centres is not None:
        log.info("teacher centres: %d classes read from %s", num_classes, path)
        return centres
    centres = compute_centres(provider, rows, labels, num_classes)
    write_centres(path, centres, key)
    log.info("teacher centres: %d classes computed from the cache into %s", num_classes, path)
    return centres
