"""Resumable embedding of a long list of images, in chunks saved as `.npy` files in a work folder.

Chunk c holds the raw views [n_c, 2, D] float32 of images c * chunk_size .. (c + 1) * chunk_size - 1, as
`embed_views` returns them (view 0: the image, view 1: its horizontal flip), in `chunk_<c:06d>.npy`,
written atomically. `manifest.json` records what the chunks depend on (the caller's fingerprint: the
model and the image list, the image count and the chunk size). A rerun with the same manifest embeds
only the chunks that are missing; a different manifest discards the old chunks.
"""
from __future__ import annotations

import json
import logging
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import atomic_path, atomic_write_text
from common.errors import PipelineError
from common.progress import progress

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
CHUNK_PATTERN = "chunk_{index:06d}.npy"
PREFETCH_BATCHES = 1  # batches loaded ahead of the one being embedded (workers > 0)
ViewsFn = Callable[[np.ndarray], Any]  # uint8 [B, H, W, 3] -> [B, 2, D] (numpy array or CPU torch tensor)


def chunk_path(work_dir: Path, index: int) -> Path:
    return work_dir / CHUNK_PATTERN.format(index=index)


def _chunk_is_done(path: Path, rows: int) -> bool:
    """Whether `path` holds a finished chunk of `rows` images ([rows, 2, D] float32)."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return False
    shaped = arr.dtype == np.float32 and arr.ndim == 3 and arr.shape[0] == rows and arr.shape[1] == 2
    return shaped and bool(np.isfinite(arr).all())  # a chunk of NaN (a broken run's) is embedded again


def prepare_work_dir(work_dir: Path, manifest: dict[str, Any]) -> None:
    """Create `work_dir`; discard its chunks when they were made for another manifest, then record this one."""
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / MANIFEST
    text = json.dumps(manifest, sort_keys=True, indent=1)
    old: Any = None
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
    if old == json.loads(text):
        return
    stale = sorted(work_dir.glob("chunk_*.npy"))
    if stale:
        log.warning("%s: %d embedding chunks were made for another model or image list; embedding again",
                    work_dir, len(stale))
        for p in stale:
            p.unlink()
    atomic_write_text(path, text)


def _views(embed_views: ViewsFn, images: np.ndarray, first: int) -> np.ndarray:
    """`embed_views` of one batch, checked: float32 [B, 2, D] and finite, else PipelineError."""
    out = np.asarray(embed_views(images), dtype=np.float32)
    last = first + images.shape[0] - 1
    if out.ndim != 3 or out.shape[:2] != (images.shape[0], 2):
        raise PipelineError(f"embedding images {first}..{last}: expected views [{images.shape[0]}, 2, D], "
                            f"got {list(out.shape)}")
    if not np.isfinite(out).all():
        raise PipelineError(f"embedding images {first}..{last}: the model output is not finite")
    return out


def _batch_plan(chunks: list[range], todo: list[int], batch_size: int) -> list[tuple[int, range]]:
    """(chunk, images of one `embed_views` call) of every chunk to embed, in order; a batch never spans two chunks."""
    return [(c, range(s, min(s + batch_size, chunks[c].stop)))
            for c in todo for s in range(chunks[c].start, chunks[c].stop, batch_size)]


def _loaded_batches(load: Callable[[int], np.ndarray], plan: list[tuple[int, range]],
                    pool: ThreadPoolExecutor | None, prefetch: int
                    ) -> Iterator[tuple[int, range, np.ndarray]]:
    """(chunk, batch, images uint8 [B, H, W, 3]) of each planned batch, in order.

    Without a pool the images are loaded here, batch by batch. With one, the `prefetch` batches after the
    one being yielded are already submitted to it (one image per task, in order), so they are read and
    aligned while the caller embeds; a load that raises raises here, when its batch is reached.
    """
    if pool is None:
        for c, batch in plan:
            yield c, batch, np.stack([load(i) for i in batch])
        return
    upcoming = iter(plan)
    pending: deque[tuple[int, range, list[Future[np.ndarray]]]] = deque()

    def submit_next() -> bool:
        item = next(upcoming, None)
        if item is None:
            return False
        pending.append((item[0], item[1], [pool.submit(load, i) for i in item[1]]))
        return True

    while True:
        while len(pending) <= prefetch and submit_next():  # this batch and the `prefetch` after it
            pass
        if not pending:
            return
        c, batch, futures = pending.popleft()
        yield c, batch, np.stack([f.result() for f in futures])


def _save_chunk(path: Path, views: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, views, allow_pickle=False)


def embed_in_chunks(load: Callable[[int], np.ndarray], count: int, embed_views: ViewsFn,
                    work_dir: str | os.PathLike[str], fingerprint: dict[str, Any], chunk_size: int = 8192,
                    batch_size: int = 256, workers: int = 0, desc: str = "embed") -> list[Path]:
    """Embed images 0 .. count - 1 (`load(i)` -> uint8 [H, W, 3]) and their flips; returns the chunk files in order.

    Chunks already in `work_dir` for the same `fingerprint`, count and chunk size are kept; the others
    are embedded `batch_size` images per `embed_views` call (a batch never spans two chunks), with a
    progress bar on stderr. Images are loaded by `workers` threads, which read the next
    `PREFETCH_BATCHES` batches while `embed_views` runs on the current one (also across chunk ends);
    `workers` 0 loads them in this thread, between the calls.
    """
    if count < 1 or chunk_size < 1 or batch_size < 1:
        raise ValueError(f"count ({count}), chunk_size ({chunk_size}) and batch_size ({batch_size}) must be >= 1")
    work = Path(work_dir)
    prepare_work_dir(work, {"fingerprint": fingerprint, "count": count, "chunk_size": chunk_size})
    chunks = [range(s, min(s + chunk_size, count)) for s in range(0, count, chunk_size)]
    todo = [c for c, r in enumerate(chunks) if not _chunk_is_done(chunk_path(work, c), len(r))]
    done_images = count - sum(len(chunks[c]) for c in todo)
    if done_images:
        log.info("%s: %d of %d chunks already embedded in %s", desc, len(chunks) - len(todo), len(chunks), work)
    pool = ThreadPoolExecutor(workers) if workers > 0 else None
    parts: list[np.ndarray] = []
    try:
        bar = progress(count, desc, initial=done_images)
        for c, batch, images in _loaded_batches(load, _batch_plan(chunks, todo, batch_size), pool,
                                                  PREFETCH_BATCHES):
            parts.append(_views(embed_views, images, batch.start))
            bar.update(len(batch))
            if batch.stop == chunks[c].stop:  # the chunk's last batch
                _save_chunk(chunk_path(work, c), parts[0] if len(parts) == 1 else np.concatenate(parts))
                parts = []
        bar.close()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return [chunk_path(work, c) for c in range(len(chunks))]
