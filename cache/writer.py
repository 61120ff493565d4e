"""Crash-safe writer of the teacher cache: a resumable `<path>.partial` file, renamed when complete.

Why the work file survives `kill -9` at any point:
- it is built whole under a temporary name (every dataset allocated up front, attributes last) and
  renamed to `<path>.partial` only once closed, so a half-created work file never exists;
- afterwards only raw values change: the embeddings (pre-allocated, chunked by rows) and `done`
  (contiguous). No HDF5 metadata is touched by `write`, so an interrupted write can at worst leave
  some embedding rows half written;
- `write` stores embeddings, flushes, then sets `done` for those rows and flushes again, so a row is
  marked done only once its embeddings reached the file. On resume every done row is checked again
  (both views unit norm; never-written space reads as zeros) and rows that fail are redone;
- `finalize` copies the closed work file to a temporary name beside the final path, adds the
  identity table and positives there, then the per-block CRC32 of every dataset (`cache.checksums`,
  computed from that copy, so they describe the bytes published), marks it complete and renames it
  into place; the work file is removed only afterwards, so an interrupted finalize loses nothing (its
  temporary copy is deleted by the next write into the folder, `common.atomic`). When the disk has no
  room for the copy (`has_room_for_copy`: Glint360K's work file is 35 GB), the work file itself is
  moved to the temporary name and finished there, with a warning: the final cache is still never
  half-written, but an interruption during finalisation then costs the extraction.
A work file that cannot be opened or lacks part of the layout is discarded with a warning and the
extraction starts over: losing work is acceptable, a corrupt final cache is not.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from cache import layout
from cache.checksums import write_checksums
from cache.identity import identity_csr
from cache.paths import partial_path
from cache.rows import ViewRows, as_float32, row_blocks
from common.atomic import atomic_path
from common.errors import ConfigError, PipelineError
from config.choices import CACHE_DTYPES, check_choice

log = logging.getLogger(__name__)

COPY_HEADROOM = 1.1  # finalize copies the work file when the disk holds 1.1 x its size more; else in place
NORM_TOLERANCE = 1e-2  # |norm - 1| allowed for a stored view (float16 rounding is ~5e-4)
VERIFY_BLOCK_ROWS = 16384


def has_room_for_copy(path: Path) -> bool:
    """Whether the file system of `path` has room for a copy of it (`COPY_HEADROOM` times its size free)."""
    return shutil.disk_usage(path.parent).free >= COPY_HEADROOM * path.stat().st_size


def _dtype_name(dtype: Any) -> str:
    name = np.dtype(dtype).name
    check_choice(name, CACHE_DTYPES, "cache.dtype")
    return name


def _view_norm_ok(block: np.ndarray) -> np.ndarray:
    """[b] bool: both views of each row have unit norm within NORM_TOLERANCE (and are finite)."""
    norms = torch.linalg.vector_norm(torch.from_numpy(as_float32(block)), dim=-1).numpy()
    return np.all(np.abs(norms - 1.0) <= NORM_TOLERANCE, axis=-1)


class CacheWriter:
    """Writes teacher embeddings into `<path>.partial` block by block; `finalize` publishes `path`."""

    def __init__(self, path: Path, file: h5py.File, attrs: dict[str, Any], done: np.ndarray,
                 chunk_rows: int, resumed: bool) -> None:
        self.path = path
        self.partial = partial_path(path)
        self._file: h5py.File | None = file
        self._emb = file[layout.EMBEDDINGS]
        self._norms = file[layout.NORMS]
        self._done_ds = file[layout.DONE]
        self._attrs = attrs
        self._done = done
        self.n_rows = int(self._emb.shape[0])
        self.dim = int(self._emb.shape[2])
        self.dtype = str(attrs[layout.ATTR_DTYPE])
        self.chunk_rows = chunk_rows
        self.resumed = resumed

    @classmethod
    def open(cls, path: str | os.PathLike[str], n_rows: int, dim: int, dtype: Any, labels: np.ndarray,
             keys: Sequence[str], attrs: Mapping[str, Any], chunk_rows: int = 1024,
             fresh: bool = False) -> CacheWriter:
        """Create `<path>.partial`, or reopen it to resume when its fingerprint matches this run.

        attrs must hold `teacher` and `dataset` (dicts); `tool_version`, `config_hash` and any other
        entries are stored too. A partial file whose teacher, dataset, embedding_dim, dtype, rows,
        labels or keys differ raises ConfigError naming the attribute, unless `fresh` is set, which
        deletes it and starts over.
        """
        path = Path(path)
        if n_rows < 1:
            raise ValueError("a teacher cache needs at least one row")
        if dim < 1:
            raise ValueError(f"embedding dimension must be positive, got {dim}")
        labels = np.asarray(labels, dtype=np.int64)
        keys = [str(k) for k in keys]
        if labels.shape != (n_rows,) or len(keys) != n_rows:
            raise ValueError(f"labels {labels.shape} and keys ({len(keys)}) must both have n_rows={n_rows} entries")
        full = cls._full_attrs(attrs, dim, _dtype_name(dtype))
        chunk = max(1, min(int(chunk_rows), n_rows))
        work = partial_path(path)
        resumed = work.exists() and cls._can_resume(work, full, labels, keys, fresh)
        if not resumed:
            cls._create(work, n_rows, dim, full, labels, keys, chunk)
        file = h5py.File(work, "r+", rdcc_nbytes=0)  # no chunk cache: writes go straight to the file
        try:
            done = file[layout.DONE][()].astype(bool)
            chunk = int(file[layout.EMBEDDINGS].chunks[0])
            if resumed:
                done = cls._verified_done(file[layout.EMBEDDINGS], done, work)
                log.info("resuming %s: %d of %d rows already done", work, int(done.sum()), n_rows)
        except BaseException:
            file.close()
            raise
        return cls(path, file, full, done, chunk, resumed)

    @staticmethod
    def _full_attrs(attrs: Mapping[str, Any], dim: int, dtype: str) -> dict[str, Any]:
        for name in (layout.ATTR_TEACHER, layout.ATTR_DATASET):
            if not isinstance(attrs.get(name), Mapping):
                raise ValueError(f"cache attrs need a '{name}' dict (the {name} fingerprint)")
        given_dim = attrs.get(layout.ATTR_EMBEDDING_DIM, dim)
        given_dtype = attrs.get(layout.ATTR_DTYPE, dtype)
        if int(given_dim) != dim or _dtype_name(given_dtype) != dtype:
            raise ValueError(f"attrs say embedding_dim={given_dim}, dtype={given_dtype} but the writer was "
                             f"opened with dim={dim}, dtype={dtype}")
        full: dict[str, Any] = {
            layout.ATTR_FORMAT_VERSION: layout.FORMAT_VERSION,
            layout.ATTR_VIEWS: list(layout.VIEWS),
            layout.ATTR_TOOL_VERSION: "",
            layout.ATTR_CONFIG_HASH: "",
        }
        full.update(attrs)
        full[layout.ATTR_EMBEDDING_DIM] = dim
        full[layout.ATTR_DTYPE] = dtype
        full.pop(layout.ATTR_COMPLETE, None)
        return full

    @staticmethod
    def _discard(work: Path, reason: str) -> None:
        log.warning("partial teacher cache %s %s; deleting it and starting the extraction over", work, reason)
        work.unlink()

    @classmethod
    def _can_resume(cls, work: Path, attrs: dict[str, Any], labels: np.ndarray, keys: list[str],
                    fresh: bool) -> bool:
        """True when `work` is intact and was written for this run; deletes it when it is not usable."""
        try:
            file = h5py.File(work, "r")
        except OSError as e:
            if e.errno == errno.EAGAIN or "lock" in str(e):
                raise ConfigError(f"partial teacher cache '{work}' is being written by another process; "
                                  "wait for it to finish or stop it") from None
            cls._discard(work, f"cannot be opened ({e})")
            return False
        with file:
            stored = layout.decode_attrs(file.attrs)
            problem = cls._structure_problem(file, stored)
            if problem:
                cls._discard(work, problem)
                return False
            diffs = [f"{name}: partial file has {layout.canonical_json(stored[name])}, "
                     f"this run has {layout.canonical_json(attrs[name])}"
                     for name in layout.FINGERPRINT_ATTRS if not layout.same_value(stored[name], attrs[name])]
            if not diffs:
                diffs = cls._content_diffs(file, labels, keys)
        if diffs:
            if fresh:
                cls._discard(work, "was written for another run (" + "; ".join(diffs) + ")")
                return False
            raise ConfigError(f"partial teacher cache '{work}' was written for another run: " + "; ".join(diffs)
                              + f". Delete '{work}' (or open the writer with fresh=True) to start over.")
        return True

    @staticmethod
    def _structure_problem(file: h5py.File, stored: dict[str, Any]) -> str:
        """Why `file` is not an intact work file, or '' when it is."""
        for name in layout.PARTIAL_DATASETS:
            if name not in file:
                return f"lacks the '{name}' dataset"
        for name in (*layout.FINGERPRINT_ATTRS, layout.ATTR_FORMAT_VERSION):
            if name not in stored:
                return f"lacks the '{name}' attribute"
        if stored[layout.ATTR_FORMAT_VERSION] not in layout.PARTIAL_FORMAT_VERSIONS:
            return f"has format_version {stored[layout.ATTR_FORMAT_VERSION]}, not {layout.FORMAT_VERSION}"
        emb = file[layout.EMBEDDINGS]
        n = emb.shape[0]
        if (emb.ndim != 3 or emb.shape[1] != 2 or emb.shape[2] != stored[layout.ATTR_EMBEDDING_DIM]
                or emb.dtype.name != stored[layout.ATTR_DTYPE] or emb.chunks is None):
            return f"has an embeddings dataset of shape {emb.shape} and dtype {emb.dtype}"
        if file[layout.NORMS].shape != (n, 2):
            return f"has a 'norms' dataset of shape {file[layout.NORMS].shape}, not ({n}, 2)"
        for name in (layout.LABELS, layout.KEYS, layout.DONE):
            if file[name].shape != (n,):
                return f"has a '{name}' dataset of shape {file[name].shape}, not ({n},)"
        return ""

    @staticmethod
    def _content_diffs(file: h5py.File, labels: np.ndarray, keys: list[str]) -> list[str]:
        n = file[layout.LABELS].shape[0]
        if n != len(labels):
            return [f"rows: partial file has {n}, this run has {len(labels)}"]
        stored_labels = file[layout.LABELS][()]
        if not np.array_equal(stored_labels, labels):
            row = int(np.argmax(stored_labels != labels))
            return [f"labels: row {row} is {int(stored_labels[row])} in the partial file, {int(labels[row])} now"]
        stored_keys = file[layout.KEYS].asstr()[()]
        for row, (a, b) in enumerate(zip(stored_keys.tolist(), keys, strict=False)):
            if a != b:
                return [f"keys: row {row} is {a!r} in the partial file, {b!r} now"]
        return []

    @staticmethod
    def _create(work: Path, n_rows: int, dim: int, attrs: dict[str, Any], labels: np.ndarray,
                keys: list[str], chunk: int) -> None:
        """Build a complete empty work file under a temporary name, then rename it to `work`."""
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)  # no chunk allocation (metadata) while writing
        dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)  # sparse: unwritten rows read back as zeros
        with atomic_path(work) as tmp, h5py.File(tmp, "w") as f:
            f.create_dataset(layout.EMBEDDINGS, shape=(n_rows, 2, dim), dtype=attrs[layout.ATTR_DTYPE],
                             chunks=(chunk, 2, dim), dcpl=dcpl, track_times=False)
            f.create_dataset(layout.NORMS, shape=(n_rows, 2), dtype=np.float32, chunks=(chunk, 2), dcpl=dcpl,
                             track_times=False)
            f.create_dataset(layout.LABELS, data=labels, dtype=np.int64, track_times=False)
            f.create_dataset(layout.KEYS, data=np.array(keys, dtype=object),
                             dtype=h5py.string_dtype("utf-8"), track_times=False)
            f.create_dataset(layout.DONE, data=np.zeros(n_rows, dtype=bool), track_times=False)
            for name, value in attrs.items():
                f.attrs[name] = layout.encode_attr(value)

    @staticmethod
    def _verified_done(emb: h5py.Dataset, done: np.ndarray, work: Path) -> np.ndarray:
        """Clear `done` for rows whose stored views are not unit norm (unwritten or torn by a crash)."""
        done = done.copy()
        for start in range(0, len(done), VERIFY_BLOCK_ROWS):
            stop = min(start + VERIFY_BLOCK_ROWS, len(done))
            if not done[start:stop].any():
                continue
            ok = _view_norm_ok(emb[start:stop])
            bad = np.flatnonzero(done[start:stop] & ~ok)
            if len(bad):
                log.warning("partial teacher cache %s: %d rows marked done from row %d hold no valid "
                            "embedding; they will be extracted again", work, len(bad), start + int(bad[0]))
                done[start + bad] = False
        return done

    def _require_open(self) -> h5py.File:
        if self._file is None:
            raise PipelineError(f"cache writer for '{self.path}' is closed")
        return self._file

    def pending_rows(self) -> np.ndarray:
        """[P] int64 rows not written yet, increasing."""
        return np.flatnonzero(~self._done).astype(np.int64)

    def done_mask(self) -> np.ndarray:
        """[N] bool copy of the rows written so far."""
        return self._done.copy()

    @property
    def rows_done(self) -> int:
        return int(self._done.sum())

    def write(self, rows: np.ndarray, emb: np.ndarray, norms: np.ndarray | None = None) -> None:
        """Store `emb` [b, 2, D] float32 (unit-norm views: original, flipped) for dataset `rows` [b].

        norms: [b, 2] the L2 norm each view had before it was normalised (None: 1, the model's outputs
        were unit norm), so that readers can rebuild insightface's flip fusion of the raw outputs.
        Embeddings and norms are flushed to the file before `done` is set for the rows, then `done` is flushed.
        """
        file = self._require_open()
        rows = np.asarray(rows).reshape(-1).astype(np.int64)
        emb = np.asarray(emb, dtype=np.float32)
        if emb.shape != (len(rows), 2, self.dim):
            raise ValueError(f"embeddings of shape {emb.shape} for {len(rows)} rows; expected "
                             f"({len(rows)}, 2, {self.dim})")
        if len(rows) == 0:
            return
        if rows.min() < 0 or rows.max() >= self.n_rows:
            raise ValueError(f"rows must lie in [0, {self.n_rows}), got {int(rows.min())}..{int(rows.max())}")
        norms = np.ones((len(rows), 2), np.float32) if norms is None else np.asarray(norms, dtype=np.float32)
        if norms.shape != (len(rows), 2):
            raise ValueError(f"norms of shape {norms.shape} for {len(rows)} rows; expected ({len(rows)}, 2)")
        if not np.all(np.isfinite(norms) & (norms > 0)):
            raise ValueError(f"row {int(rows[np.argmax(~(np.isfinite(norms) & (norms > 0)).all(1))])}: "
                             "view norms must be finite and positive")
        bad = np.flatnonzero(~_view_norm_ok(emb))
        if len(bad):
            raise ValueError(f"row {int(rows[bad[0]])}: teacher embeddings must be finite and unit norm "
                             f"(norms {np.linalg.norm(emb[bad[0]], axis=-1).tolist()})")
        order = np.argsort(rows, kind="stable")
        rows, emb, norms = rows[order], emb[order], norms[order]
        if np.any(rows[1:] == rows[:-1]):
            raise ValueError(f"row {int(rows[np.argmax(rows[1:] == rows[:-1])])} appears twice in one write")
        data = torch.from_numpy(emb).to(getattr(torch, self.dtype)).numpy()
        blocks = list(row_blocks(rows, self.chunk_rows))
        for start, stop, at in blocks:
            self._emb[start:stop] = data[at:at + stop - start]
            self._norms[start:stop] = norms[at:at + stop - start]
        file.flush()
        for start, stop, _ in blocks:
            self._done_ds[start:stop] = True
        file.flush()
        self._done[rows] = True

    def view_rows(self, view: int = 0) -> ViewRows:
        """One view of the work file as a `cache.rows.RowSource` (rows not done read as zeros or torn values)."""
        self._require_open()
        return ViewRows(self._emb, view, self.chunk_rows)

    def read_view(self, view: int = 0) -> np.ndarray:
        """[N, D] float32 embeddings of one view (0: as stored, 1: flipped); rows not done are zeros."""
        self._require_open()
        out = np.zeros((self.n_rows, self.dim), dtype=np.float32)
        step = max(self.chunk_rows, VERIFY_BLOCK_ROWS // self.chunk_rows * self.chunk_rows)
        for start in range(0, self.n_rows, step):
            stop = min(start + step, self.n_rows)
            out[start:stop] = self._emb[start:stop, view]
        out[~self._done] = 0.0
        return out

    def close(self) -> None:
        """Flush and close the work file without finalizing (it stays resumable)."""
        if self._file is not None:
            self._file.flush()
            self._file.close()
            self._file = None

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def finalize(self, positives: np.ndarray, positive_sims: np.ndarray, identity_rows: np.ndarray | None = None,
                 identity_offsets: np.ndarray | None = None) -> Path:
        """Add the identity CSR and positives tables, mark the cache complete and publish it at `path`.

        positives: [N, K] int64 (-1 pads); positive_sims: [N, K] (stored as float16); identity CSR as
        from `identity_csr` (computed from labels over done rows when not given). Rows never written
        (skipped images) keep done = False and zero embeddings.
        """
        file = self._require_open()
        positives = np.asarray(positives)
        sims = np.asarray(positive_sims, dtype=np.float32)
        if positives.ndim != 2 or positives.shape[0] != self.n_rows or sims.shape != positives.shape:
            raise ValueError(f"positives {positives.shape} and positive_sims {sims.shape} must both be "
                             f"[{self.n_rows}, K]")
        if identity_rows is None or identity_offsets is None:
            labels = np.where(self._done, file[layout.LABELS][()], -1)
            classes = self._attrs[layout.ATTR_DATASET].get("classes")
            num_classes = int(classes) if isinstance(classes, int) else int(labels.max()) + 1
            identity_rows, identity_offsets = identity_csr(labels, num_classes)
        identity_rows = np.asarray(identity_rows, dtype=np.int64)
        identity_offsets = np.asarray(identity_offsets, dtype=np.int64)
        if (identity_offsets.ndim != 1 or len(identity_offsets) < 1 or identity_offsets[0] != 0
                or identity_offsets[-1] != len(identity_rows) or np.any(np.diff(identity_offsets) < 0)):
            raise ValueError("identity_offsets must rise from 0 to len(identity_rows)")
        self.close()
        copy = has_room_for_copy(self.partial)
        if not copy:
            log.warning("%s: no room on the disk for a copy of the work file (%.1f GB); finalising it in place, so "
                        "an interruption now would cost the extraction", self.path, self.partial.stat().st_size / 1e9)
        with atomic_path(self.path) as tmp:
            if copy:
                shutil.copyfile(self.partial, tmp)
            else:
                os.replace(self.partial, tmp)
            with h5py.File(tmp, "r+") as f:
                f.create_dataset(layout.IDENTITY_ROWS, data=identity_rows, track_times=False)
                f.create_dataset(layout.IDENTITY_OFFSETS, data=identity_offsets, track_times=False)
                f.create_dataset(layout.POSITIVES, data=positives.astype(np.int64), track_times=False)
                f.create_dataset(layout.POSITIVE_SIMS, data=sims.astype(np.float16), track_times=False)
                for name, value in self._attrs.items():
                    f.attrs[name] = layout.encode_attr(value)
                write_checksums(f, self.chunk_rows)
                f.attrs[layout.ATTR_COMPLETE] = True
        with contextlib.suppress(FileNotFoundError):
            self.partial.unlink()
        log.info("teacher cache complete: %s", self.path)
        return self.path
