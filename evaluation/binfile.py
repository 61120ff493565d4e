"""insightface `.bin` verification sets, read with a restricted unpickler.

A `.bin` file is a pickle of `(bins, issame)`: `bins` holds 2n encoded images (pair k is
`bins[2k]`, `bins[2k + 1]`) and `issame` n flags. Old files are Python 2 pickles (read, as insightface
does, with `encoding="bytes"`), newer ones Python 3 pickles, possibly holding numpy arrays. Only the
globals such data needs are resolved; any other global (os.system, builtins.eval, ...) is refused.
"""
from __future__ import annotations

import codecs
import io
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import atomic_write_bytes
from common.errors import ConfigError

_LATIN1 = {"latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1"}


def _latin1_encode(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """Stand-in for `_codecs.encode` as protocol-2 pickles use it for bytes: latin-1 only."""
    if not isinstance(text, str) or str(encoding).lower() not in _LATIN1:
        raise pickle.UnpicklingError(f"_codecs.encode refused for encoding {encoding!r}")
    return codecs.encode(text, "latin1", errors)


def _numpy_globals() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {}
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        if hasattr(numeric, "_frombuffer"):
            allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    return allowed


def _allowed_globals() -> dict[tuple[str, str], Any]:
    allowed = _numpy_globals()
    for module in ("builtins", "__builtin__"):
        allowed[(module, "bytes")] = bytes
        allowed[(module, "bytearray")] = bytearray
    allowed[("_codecs", "encode")] = _latin1_encode
    return allowed


_ALLOWED = _allowed_globals()


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler resolving only the globals in `_ALLOWED`; anything else raises ConfigError."""

    def __init__(self, file: io.BufferedIOBase, source: Path) -> None:
        super().__init__(file, encoding="bytes")
        self._source = source

    def find_class(self, module: str, name: str) -> Callable[..., Any]:
        found = _ALLOWED.get((module, name))
        if found is None:
            raise ConfigError(f"{self._source}: refused to load global {module}.{name} from the pickle")
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise ConfigError(f"{self._source}: refused persistent id in the pickle")


def _as_bytes(item: Any, path: Path, k: int) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, bytearray):
        return bytes(item)
    if isinstance(item, np.ndarray) and item.dtype in (np.uint8, np.int8) and item.ndim == 1:
        return item.tobytes()
    raise ConfigError(f"{path}: image {k} is {type(item).__name__}, expected encoded image bytes")


def _as_flags(issame: Any, path: Path) -> np.ndarray:
    if isinstance(issame, np.ndarray):
        values = issame.ravel().tolist() if issame.ndim == 1 else None
    elif isinstance(issame, (list, tuple)):
        values = list(issame)
    else:
        values = None
    if values is None or not all(isinstance(v, (bool, np.bool_, int, np.integer)) and v in (0, 1)
                                 for v in values):
        raise ConfigError(f"{path}: issame must be a flat sequence of booleans")
    return np.array(values, dtype=bool)


def load_bin(path: str | os.PathLike[str]) -> tuple[list[bytes], np.ndarray]:
    """Read an insightface `.bin`: (2n encoded images as bytes, issame bool [n]).

    Raises ConfigError naming the file for a missing or malformed file, a refused global, or a
    structure other than `(bins, issame)` with `len(bins) == 2 * len(issame)`.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = _RestrictedUnpickler(fh, path).load()
    except ConfigError:
        raise
    except FileNotFoundError as exc:
        raise ConfigError(f"pair file not found: {path}") from exc
    except Exception as exc:  # truncated or malformed pickles raise many kinds of error
        raise ConfigError(f"{path}: not a readable insightface .bin pickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ConfigError(f"{path}: expected a pickled (bins, issame) pair")
    bins, issame = data
    if not isinstance(bins, (list, tuple)):
        raise ConfigError(f"{path}: bins must be a list of encoded images, got {type(bins).__name__}")
    flags = _as_flags(issame, path)
    if len(flags) == 0:
        raise ConfigError(f"{path}: the file holds no pairs")
    if len(bins) != 2 * len(flags):
        raise ConfigError(f"{path}: {len(bins)} images for {len(flags)} pairs (expected {2 * len(flags)})")
    return [_as_bytes(item, path, k) for k, item in enumerate(bins)], flags


def write_bin(path: str | os.PathLike[str], bins: list[bytes], issame: np.ndarray) -> None:
    """Write an insightface `.bin` atomically: a pickle (protocol 4) of (bins, issame as a list of bools).

    `bins` holds 2n encoded images (pair k is bins[2k], bins[2k + 1]); `issame` n flags. The file holds
    only bytes, lists and bools, which `load_bin` (and insightface's `pickle.load`) read back.
    """
    flags = [bool(f) for f in np.asarray(issame).reshape(-1)]
    if len(bins) != 2 * len(flags) or not flags:
        raise ValueError(f"{len(bins)} images for {len(flags)} pairs (expected 2 per pair, at least one pair)")
    atomic_write_bytes(path, pickle.dumps(([bytes(b) for b in bins], flags), protocol=4))
