"""The teacher-cache HDF5 layout (DESIGN.md section 2): dataset and attribute names, attribute coding.

Names here are a file format other tools read: never rename them. Nested attribute values (the
teacher and dataset fingerprints, the view names) are stored as canonical JSON strings.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

FORMAT_VERSION = 3  # 2: adds `norms`; 3: adds the `<dataset>_crc32` checksums and `checksum_rows`
# Work files (`<path>.partial`) of these versions share one layout (checksums are added at finalisation),
# so an extraction interrupted under format 2 resumes.
PARTIAL_FORMAT_VERSIONS = (2, FORMAT_VERSION)

EMBEDDINGS = "embeddings"  # [N, 2, D] float16 | float32, unit norm; view 0 as stored, view 1 flipped
LABELS = "labels"  # [N] int64
KEYS = "keys"  # [N] utf-8 variable-length strings
IDENTITY_ROWS = "identity_rows"  # [n] int64, rows grouped by identity (CSR values)
IDENTITY_OFFSETS = "identity_offsets"  # [C + 1] int64 (CSR offsets)
POSITIVES = "positives"  # [N, K] int64, -1 pads
POSITIVE_SIMS = "positive_sims"  # [N, K] float16
DONE = "done"  # [N] bool
NORMS = "norms"  # [N, 2] float32, L2 norm of each raw view before it was normalised

# Checksums (format 3), written by `CacheWriter.finalize` and checked by `TeacherCache` on open: for each
# dataset D of CHECKSUMMED, `D_crc32` [B] uint32 holds zlib's CRC32 of the bytes (little-endian, C order)
# of rows [b * R, (b + 1) * R) of D, b = 0..B-1, B = max(1, ceil(len(D) / R)), R = attribute
# `checksum_rows` (the embeddings' storage chunk of rows, so a block is one chunk); the bytes of a block
# of `keys` are its strings in UTF-8 joined by NUL.
CHECKSUMMED = (EMBEDDINGS, NORMS, LABELS, KEYS, DONE, IDENTITY_ROWS, IDENTITY_OFFSETS, POSITIVES, POSITIVE_SIMS)
CHECKSUM_SUFFIX = "_crc32"


def checksum_name(name: str) -> str:
    """The dataset holding the per-block CRC32 of dataset `name`: `embeddings` -> `embeddings_crc32`."""
    return name + CHECKSUM_SUFFIX


CHECKSUM_DATASETS = tuple(checksum_name(name) for name in CHECKSUMMED)
REQUIRED_DATASETS = (EMBEDDINGS, NORMS, LABELS, KEYS, IDENTITY_ROWS, IDENTITY_OFFSETS, POSITIVES, POSITIVE_SIMS, DONE,
                     *CHECKSUM_DATASETS)
PARTIAL_DATASETS = (EMBEDDINGS, NORMS, LABELS, KEYS, DONE)

ATTR_FORMAT_VERSION = "format_version"
ATTR_TEACHER = "teacher"
ATTR_DATASET = "dataset"
ATTR_EMBEDDING_DIM = "embedding_dim"
ATTR_DTYPE = "dtype"
ATTR_VIEWS = "views"
ATTR_TOOL_VERSION = "tool_version"
ATTR_CONFIG_HASH = "config_hash"
ATTR_COMPLETE = "complete"
ATTR_CHECKSUM_ROWS = "checksum_rows"  # int, rows per checksum block (format 3)

VIEWS = ("original", "hflip")
# The attributes a partial cache must share with a new run before it may be resumed.
FINGERPRINT_ATTRS = (ATTR_TEACHER, ATTR_DATASET, ATTR_EMBEDDING_DIM, ATTR_DTYPE)


def canonical_json(value: Any) -> str:
    """Deterministic JSON text of `value` (sorted keys, no spaces; numpy scalars/arrays as Python values)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in a cache attribute")


def encode_attr(value: Any) -> Any:
    """An HDF5-storable attribute value: mappings and sequences become canonical JSON strings."""
    if isinstance(value, (Mapping, list, tuple)):
        return canonical_json(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, bool, int, float)):
        return value
    raise TypeError(f"cannot store {type(value).__name__} in a cache attribute")


def decode_attr(value: Any) -> Any:
    """The Python value of a stored attribute: JSON strings parsed back, numpy scalars unwrapped."""
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if isinstance(value, str):
        if value[:1] in ("{", "["):
            try:
                return json.loads(value)
            except json.JSONDecodeError:
                return value
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def decode_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """All attributes of an HDF5 object, decoded."""
    return {name: decode_attr(value) for name, value in attrs.items()}


def same_value(a: Any, b: Any) -> bool:
    """Attribute equality as stored: tuples equal lists, numpy scalars equal Python numbers."""
    return canonical_json(a) == canonical_json(b)
