"""Where the files of one teacher cache live: the HDF5 file, its work file, FAISS index (and its checksum), report."""
from __future__ import annotations

import os
from pathlib import Path

PARTIAL_SUFFIX = ".partial"
DEFAULT_NAME = Path("cache") / "teacher.h5"


def cache_file(path: str, run_dir: str | os.PathLike[str]) -> Path:
    """`cache.path`, or `<run.dir>/cache/teacher.h5` when it is empty."""
    return Path(path) if path else Path(run_dir) / DEFAULT_NAME


def partial_path(path: str | os.PathLike[str]) -> Path:
    """The work file of the cache `path`: `<path>.partial`."""
    path = Path(path)
    return path.with_name(path.name + PARTIAL_SUFFIX)


def shard_path(path: str | os.PathLike[str], rank: int, world: int) -> Path:
    """One rank's share of a sharded extraction: `teacher.h5` -> `teacher.shard1-of-8.h5` (its work file beside)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.shard{rank}-of-{world}{path.suffix}")


def index_path(path: str | os.PathLike[str]) -> Path:
    """The FAISS index beside the cache: `teacher.h5` -> `teacher.faiss`."""
    return Path(path).with_suffix(".faiss")


def index_checksum_path(path: str | os.PathLike[str]) -> Path:
    """The SHA-256 of an index file, beside it: `teacher.faiss` -> `teacher.faiss.sha256` (`sha256sum` format)."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def quality_path(path: str | os.PathLike[str]) -> Path:
    """The data-quality report beside the cache: `teacher.h5` -> `teacher_quality.json`."""
    path = Path(path)
    return path.with_name(path.stem + "_quality.json")


def config_path(path: str | os.PathLike[str]) -> Path:
    """The resolved config saved beside the cache: `teacher.h5` -> `teacher_config.toml`."""
    path = Path(path)
    return path.with_name(path.stem + "_config.toml")
