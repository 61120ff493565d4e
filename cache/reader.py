"""Read access to a finished teacher cache: fingerprints, tables and per-batch teacher targets.

`TeacherCache` may be handed to DataLoader workers: the HDF5 file is opened lazily in each process
(never shared across a fork) and a pickled cache reopens the file where it is unpickled. Embeddings
loaded into RAM stay in the stored dtype (float16 halves the memory; converting a batch costs about
0.2 ms for 256 x 512 values) and are shared copy-on-write with forked workers.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from cache import layout
from cache.checksums import VERIFY_MODES, check_blocks, checksum_rows, verify_cache
from cache.direct import ChunkedRows
from cache.paths import partial_path
from cache.rows import ViewRows, as_float32, row_blocks
from common.errors import ConfigError, PipelineError
from config.choices import IN_RAM_MODES, check_choice

LOAD_BLOCK_ROWS = 16384
# No HDF5 chunk cache: uncompressed chunks are then read directly, only the rows asked for. With a
# cache that holds a chunk, every scattered row pulls its whole chunk in (measured for 256 random
# rows of 200k x 2 x 512 float16: 2.5 ms per batch without a cache, 39 ms with a 64 MiB one; runs of
# consecutive rows read as slices beat h5py fancy indexing, 12.8 ms).
READ_CACHE_BYTES = 0
_MISSING = "<missing>"


class TeacherCache:
    """A complete cache file (DESIGN.md section 2), its embeddings in RAM or read from the file.

    in_ram: "always" loads the embeddings at construction; "never" reads each batch from the file;
    "auto" loads them when they take at most `ram_limit_gb` GiB in the stored dtype.
    verify: how much of the stored checksums (`cache.checksums`) to check on open. "sample" (default)
    checks the first, the last and a fixed sample of row blocks of every dataset, and every block of
    what is read whole anyway (labels, done, the embeddings when loaded into RAM, and later each table
    when first read: keys, norms, positives, identity CSR); "full" every block (reads the whole file);
    "none" nothing. A mismatch, or a file h5py cannot read, is a ConfigError naming the file.
    """

    def __init__(self, path: str | os.PathLike[str], in_ram: str = "auto", ram_limit_gb: float = 8.0,
                 verify: str = "sample") -> None:
        check_choice(in_ram, IN_RAM_MODES, "cache.in_ram")
        check_choice(verify, VERIFY_MODES, "verify")
        self.path = Path(path)
        self._file: h5py.File | None = None
        self._pid: int | None = None
        self._tables: dict[str, np.ndarray] = {}
        self._keys: list[str] | None = None
        self._verify = verify
        if not self.path.is_file():
            work = partial_path(self.path)
            hint = f" (an unfinished extraction left '{work}')" if work.exists() else ""
            raise ConfigError(f"teacher cache '{self.path}' (cache.path) does not exist{hint}; "
                              "run `python cli.py extract` first")
        try:
            file = h5py.File(self.path, "r")
        except OSError as e:
            raise ConfigError(f"teacher cache '{self.path}' cannot be read as HDF5: {e}") from None
        with file, self._damage_is_config_error():
            self.attrs = layout.decode_attrs(file.attrs)
            self._validate(file)
            emb = file[layout.EMBEDDINGS]
            self.num_rows = int(emb.shape[0])
            self.embedding_dim = int(emb.shape[2])
            self.dtype = emb.dtype.name
            self.chunk_rows = int(emb.chunks[0]) if emb.chunks else LOAD_BLOCK_ROWS
            read = {layout.LABELS: file[layout.LABELS][()], layout.DONE: file[layout.DONE][()]}
            self.labels: np.ndarray = read[layout.LABELS].astype(np.int64)
            self.done: np.ndarray = read[layout.DONE].astype(bool)
            nbytes = emb.size * emb.dtype.itemsize
            load = in_ram == "always" or (in_ram == "auto" and nbytes <= ram_limit_gb * 2**30)
            self._ram: np.ndarray | None = self._load(emb) if load else None
            self._direct: ChunkedRows | None = None
            if self._ram is not None:
                read[layout.EMBEDDINGS] = self._ram
            verify_cache(file, self.path, verify, read)
        if self._ram is None:
            with self._damage_is_config_error():
                self._direct = ChunkedRows.open(self.path, layout.EMBEDDINGS)

    @contextlib.contextmanager
    def _damage_is_config_error(self) -> Iterator[None]:
        """Turn h5py's errors on a damaged file (OSError, KeyError, RuntimeError) into a ConfigError naming it."""
        try:
            yield
        except (OSError, KeyError, RuntimeError) as e:
            raise ConfigError(f"teacher cache '{self.path}' cannot be read ({e}); if the file is damaged, delete "
                              "it and run `python cli.py extract` again") from None

    def _validate(self, file: h5py.File) -> None:
        """ConfigError naming the attribute or dataset that makes `file` unusable as a finished cache."""
        version = self.attrs.get(layout.ATTR_FORMAT_VERSION, _MISSING)
        if version != layout.FORMAT_VERSION:
            raise ConfigError(f"teacher cache '{self.path}': attribute format_version is {version!r}, this tool "
                              f"reads format_version {layout.FORMAT_VERSION}; delete it and extract the cache again "
                              "(`python cli.py extract`)")
        if self.attrs.get(layout.ATTR_COMPLETE) is not True:
            raise ConfigError(f"teacher cache '{self.path}' is not marked complete (attribute 'complete'); "
                              "run `python cli.py extract` again to finish it")
        for name in layout.REQUIRED_DATASETS:
            if name not in file:
                raise ConfigError(f"teacher cache '{self.path}' lacks the dataset '{name}'")
        emb = file[layout.EMBEDDINGS]
        if emb.ndim != 3 or emb.shape[1] != 2:
            raise ConfigError(f"teacher cache '{self.path}': dataset 'embeddings' has shape {emb.shape}, "
                              "expected [N, 2, D]")
        n, dim = emb.shape[0], emb.shape[2]
        if self.attrs.get(layout.ATTR_EMBEDDING_DIM) != dim:
            raise ConfigError(f"teacher cache '{self.path}': attribute embedding_dim is "
                              f"{self.attrs.get(layout.ATTR_EMBEDDING_DIM)!r} but 'embeddings' holds {dim} values")
        for name in (layout.LABELS, layout.KEYS, layout.DONE):
            if file[name].shape != (n,):
                raise ConfigError(f"teacher cache '{self.path}': dataset '{name}' has shape {file[name].shape}, "
                                  f"expected ({n},)")
        pos, sims = file[layout.POSITIVES], file[layout.POSITIVE_SIMS]
        if pos.ndim != 2 or pos.shape[0] != n or sims.shape != pos.shape:
            raise ConfigError(f"teacher cache '{self.path}': datasets 'positives' {pos.shape} and "
                              f"'positive_sims' {sims.shape} must both be [{n}, K]")

    def _load(self, emb: h5py.Dataset) -> np.ndarray:
        out = np.empty(emb.shape, dtype=emb.dtype)
        step = max(self.chunk_rows, LOAD_BLOCK_ROWS // self.chunk_rows * self.chunk_rows)
        for start in range(0, emb.shape[0], step):
            stop = min(start + step, emb.shape[0])
            out[start:stop] = emb[start:stop]
        return out

    def _h5(self) -> h5py.File:
        """This process's handle on the file (a forked or unpickled copy opens its own)."""
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r", rdcc_nbytes=READ_CACHE_BYTES)
            self._pid = os.getpid()
        return self._file

    def close(self) -> None:
        """Close this process's file handle (RAM copies stay usable)."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None
        self._pid = None
        if self._direct is not None:
            self._direct.close()

    def __enter__(self) -> TeacherCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        return state

    @property
    def in_ram(self) -> bool:
        return self._ram is not None

    @property
    def teacher_fingerprint(self) -> dict[str, Any]:
        return dict(self.attrs[layout.ATTR_TEACHER])

    @property
    def dataset_fingerprint(self) -> dict[str, Any]:
        return dict(self.attrs[layout.ATTR_DATASET])

    @property
    def rows_done(self) -> int:
        return int(self.done.sum())

    def _read_whole(self, name: str) -> np.ndarray:
        """A whole dataset, through a short-lived handle unless this process already holds one."""
        with self._damage_is_config_error():
            if self._file is not None and self._pid == os.getpid():
                return self._file[name].asstr()[()] if name == layout.KEYS else self._file[name][()]
            with h5py.File(self.path, "r") as file:
                return file[name].asstr()[()] if name == layout.KEYS else file[name][()]

    def _checked_whole(self, name: str) -> np.ndarray:
        """A whole dataset with every block checked against its checksum (unless verify="none")."""
        value = self._read_whole(name)
        if self._verify != "none" and name in layout.CHECKSUMMED:
            rows = checksum_rows(self.attrs.get(layout.ATTR_CHECKSUM_ROWS), self.path)
            check_blocks(self.path, name, value, self._read_whole(layout.checksum_name(name)), rows)
        return value

    @property
    def keys(self) -> list[str]:
        if self._keys is None:
            self._keys = self._checked_whole(layout.KEYS).tolist()
        return self._keys

    def _table(self, name: str) -> np.ndarray:
        """A whole dataset, read once and checked (`_checked_whole`)."""
        if name not in self._tables:
            self._tables[name] = self._checked_whole(name)
        return self._tables[name]

    @property
    def positives(self) -> np.ndarray:
        """[N, K] int64 same-identity rows by decreasing teacher cosine, self excluded, -1 pads."""
        return self._table(layout.POSITIVES)

    @property
    def positive_sims(self) -> np.ndarray:
        """[N, K] float16 teacher cosines of `positives` (0 at pads)."""
        return self._table(layout.POSITIVE_SIMS)

    @property
    def identity_rows(self) -> np.ndarray:
        return self._table(layout.IDENTITY_ROWS)

    @property
    def identity_offsets(self) -> np.ndarray:
        return self._table(layout.IDENTITY_OFFSETS)

    @property
    def num_classes(self) -> int:
        return len(self.identity_offsets) - 1

    @property
    def embeddings(self) -> np.ndarray | h5py.Dataset:
        """[N, 2, D] stored embeddings: the RAM array, or the HDF5 dataset (sliceable) when not loaded."""
        return self._ram if self._ram is not None else self._h5()[layout.EMBEDDINGS]

    def view_rows(self, view: int = 0) -> ViewRows:
        """One view as a `cache.rows.RowSource`: read in float32 blocks from RAM or from the file."""
        return ViewRows(self.embeddings, view, self.chunk_rows)

    def read_view(self, view: int = 0) -> np.ndarray:
        """[N, D] float32 embeddings of one view (0: as stored, 1: flipped); skipped rows are zeros."""
        if self._ram is not None:
            return self._ram[:, view].astype(np.float32)
        emb = self._h5()[layout.EMBEDDINGS]
        out = np.empty((self.num_rows, self.embedding_dim), dtype=np.float32)
        step = max(self.chunk_rows, LOAD_BLOCK_ROWS // self.chunk_rows * self.chunk_rows)
        for start in range(0, self.num_rows, step):
            stop = min(start + step, self.num_rows)
            out[start:stop] = emb[start:stop, view]
        return out

    def targets(self, rows: np.ndarray, flips: np.ndarray, stored: bool = False) -> np.ndarray:
        """Teacher targets t = cache[rows, flips]: [B] rows and [B] flip bits (0/1) -> [B, D] float32.

        stored: return them in the stored dtype (float16 by default) instead, for a caller that converts
        them where they are used (on the training device), which saves the host the conversion.
        """
        rows = np.asarray(rows).reshape(-1).astype(np.int64)
        flips = np.asarray(flips).reshape(-1).astype(np.intp)
        if rows.shape != flips.shape:
            raise ValueError(f"{len(rows)} rows but {len(flips)} flip bits")
        if len(rows) == 0:
            return np.zeros((0, self.embedding_dim), dtype=self.dtype if stored else np.float32)
        if rows.min() < 0 or rows.max() >= self.num_rows or flips.min() < 0 or flips.max() > 1:
            raise ValueError(f"rows must lie in [0, {self.num_rows}) and flips in {{0, 1}}")
        missing = ~self.done[rows]
        if missing.any():
            raise PipelineError(f"row {int(rows[np.argmax(missing)])} of teacher cache '{self.path}' has no "
                                "embedding (its image was skipped at extraction)")
        if self._ram is not None:  # np.take on the [2N, D] view: twice numpy's fancy indexing, 0.3 ms for 3,900 rows
            picked = np.take(self._ram.reshape(-1, self.embedding_dim), rows * 2 + flips, axis=0)
        else:
            unique, inverse = np.unique(rows, return_inverse=True)
            picked = self._read_rows(unique)[inverse, flips]
        return picked if stored else as_float32(picked)  # torch converts float16 several times faster than numpy

    def raw_views(self, rows: np.ndarray) -> np.ndarray:
        """The teacher's raw (un-normalised) outputs of both views, norm x unit view: [B] rows -> [B, 2, D] float32.

        `models.preprocess.flip_fuse` of the two views is insightface's flip-fused embedding, as a live
        teacher gives it (to float32 rounding).
        """
        rows = np.asarray(rows).reshape(-1).astype(np.int64)
        units = np.stack([self.targets(rows, np.zeros_like(rows)), self.targets(rows, np.ones_like(rows))], axis=1)
        return units * self.norms[rows][:, :, None]

    @property
    def norms(self) -> np.ndarray:
        """[N, 2] float32 L2 norm of each raw view before normalisation (0 for skipped rows)."""
        return self._table(layout.NORMS).astype(np.float32, copy=False)

    def _read_rows(self, rows: np.ndarray) -> np.ndarray:
        """[U, 2, D] stored embeddings of sorted unique `rows`, read as runs of consecutive rows (in parallel
        threads straight from the file's bytes, `cache.direct`, when the dataset's storage allows)."""
        if self._direct is not None:
            return self._direct.read(rows)
        emb = self._h5()[layout.EMBEDDINGS]
        out = np.empty((len(rows), 2, self.embedding_dim), dtype=emb.dtype)
        for start, stop, at in row_blocks(rows, self.chunk_rows):
            out[at:at + stop - start] = emb[start:stop]
        return out

    def check_matches(self, expected: Mapping[str, object]) -> None:
        """Raise ConfigError naming every attribute whose cached value differs from `expected`.

        Names are attributes (`embedding_dim`, `teacher`, ...) or dotted paths into the JSON
        attributes (`dataset.listing_sha256`, `teacher.preprocessing`); lists equal tuples.
        """
        diffs = []
        for name, want in expected.items():
            have = self._attr_at(name)
            if have is _MISSING or not layout.same_value(have, want):
                shown = have if have is _MISSING else layout.canonical_json(have)
                diffs.append(f"{name}: cache has {shown}, expected {layout.canonical_json(want)}")
        if diffs:
            raise ConfigError(f"teacher cache '{self.path}' does not match this run: " + "; ".join(diffs))

    def _attr_at(self, name: str) -> Any:
        value: Any = self.attrs
        for part in name.split("."):
            if not isinstance(value, Mapping) or part not in value:
                return _MISSING
            value = value[part]
        return value
