"""MXNet RecordIO (`train.rec` + `train.idx`) in pure Python, with the insightface conventions.

File layout (dmlc-core `recordio.cc`): each chunk is a little-endian uint32 magic 0xced7230a, a uint32
`lrecord = (cflag << 29) | length`, then `length` payload bytes zero-padded to a multiple of 4. The
writer splits a record wherever the magic word occurs at a 4-aligned payload position: the magic is
dropped and the pieces become chunks with cflag 1 (first), 2 (middle), 3 (last); the reader re-inserts
the magic between pieces. cflag 0 is a whole record. The `.idx` file has `key\\toffset` lines.

Payloads (`mx.recordio.pack`) start with the 24-byte IRHeader `IfQQ` (flag, label, id, id2); when
flag > 0 the label is `flag` float32 values following the header. insightface: record 0 is a header
whose label[0] is one past the last image key (images are keys 1..label[0]-1) and label[1] the end of
the identity-record range; image records hold a scalar label and JPEG bytes.
"""
from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import NamedTuple, cast

import numpy as np

from common.atomic import atomic_path
from common.errors import ConfigError
from readers.base import CorruptImageError, FaceDataset, encode_jpeg, remap_labels

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
LENGTH_MASK = (1 << 29) - 1
IR_FORMAT = "<IfQQ"
IR_SIZE = struct.calcsize(IR_FORMAT)  # 24


class IRHeader(NamedTuple):
    """MXNet image-record header; `label` is a float, or float32 [flag] when flag > 0."""

    flag: int
    label: float | np.ndarray
    id: int
    id2: int


def _pad4(n: int) -> int:
    return (n + 3) & ~3


def pack_image(label: float, jpeg: bytes, id: int = 0) -> bytes:
    """Payload of one image record: IRHeader(flag 0, scalar label, id, 0) then the encoded image."""
    return struct.pack(IR_FORMAT, 0, float(label), int(id), 0) + bytes(jpeg)


def pack_header(first: int, end: int) -> bytes:
    """Payload of insightface record 0: flag 2, label [first, end].

    `first` is one past the last image key (= the first identity-record key), `end` one past the last
    identity-record key.
    """
    label = np.asarray([first, end], dtype="<f4")
    return struct.pack(IR_FORMAT, label.size, 0.0, 0, 0) + label.tobytes()


def pack_label_array(label: Iterable[float], payload: bytes = b"", id: int = 0) -> bytes:
    """Payload with a vector label (flag = its length), as `mx.recordio.pack` writes it."""
    arr = np.asarray(list(label), dtype="<f4")
    return struct.pack(IR_FORMAT, arr.size, 0.0, int(id), 0) + arr.tobytes() + bytes(payload)


def unpack(payload: bytes) -> tuple[IRHeader, bytes]:
    """Split a payload into its IRHeader and the bytes after it; ValueError if too short."""
    if len(payload) < IR_SIZE:
        raise ValueError(f"record of {len(payload)} bytes is shorter than the {IR_SIZE}-byte IRHeader")
    flag, label, rid, rid2 = struct.unpack_from(IR_FORMAT, payload)
    rest = payload[IR_SIZE:]
    if flag > 0:
        if len(rest) < 4 * flag:
            raise ValueError(f"IRHeader announces {flag} label values but the record ends first")
        return IRHeader(flag, np.frombuffer(rest, dtype="<f4", count=flag).copy(), rid, rid2), rest[4 * flag:]
    return IRHeader(flag, float(label), rid, rid2), rest


def scalar_label(header: IRHeader) -> float:
    """The identity label of an image record: the scalar, or the first value of a vector label."""
    return float(header.label) if header.flag == 0 else float(cast(np.ndarray, header.label)[0])


class RecordIOWriter:
    """Write an indexed RecordIO pair atomically: both files appear on `close()`, none on an error."""

    def __init__(self, rec_path: str | os.PathLike[str], idx_path: str | os.PathLike[str]) -> None:
        self._stack = ExitStack()
        rec_tmp = self._stack.enter_context(atomic_path(rec_path))
        idx_tmp = self._stack.enter_context(atomic_path(idx_path))
        self._rec = open(rec_tmp, "wb")
        self._idx = open(idx_tmp, "w", encoding="ascii")
        self._keys: set[int] = set()

    def write(self, idx: int, payload: bytes) -> None:
        """Append record `idx` (unique non-negative int), splitting it at aligned magic words."""
        idx = int(idx)
        if idx < 0 or idx in self._keys:
            raise ValueError(f"record key {idx} is negative or already written")
        if len(payload) > LENGTH_MASK:
            raise ValueError(f"record {idx} has {len(payload)} bytes; RecordIO allows < 2**29")
        self._keys.add(idx)
        self._idx.write(f"{idx}\t{self._rec.tell()}\n")
        view = memoryview(payload)
        start = 0
        split = False
        hit = payload.find(MAGIC_BYTES)
        while hit != -1:
            if hit % 4:
                hit = payload.find(MAGIC_BYTES, hit + 1)
                continue
            self._chunk(2 if split else 1, view[start:hit])
            split = True
            start = hit + 4
            hit = payload.find(MAGIC_BYTES, start)
        self._chunk(3 if split else 0, view[start:])

    def _chunk(self, cflag: int, data: memoryview) -> None:
        self._rec.write(struct.pack("<II", MAGIC, (cflag << 29) | len(data)))
        self._rec.write(data)
        self._rec.write(b"\0" * (_pad4(len(data)) - len(data)))

    def close(self) -> None:
        """Finish both files and move them into place."""
        self._rec.close()
        self._idx.close()
        self._stack.close()

    def __enter__(self) -> RecordIOWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._rec.close()
        self._idx.close()
        self._stack.__exit__(exc_type, exc, tb)


class RecordIOReader:
    """Random access to an indexed RecordIO file; safe to use from forked or spawned workers."""

    def __init__(self, rec_path: str | os.PathLike[str], idx_path: str | os.PathLike[str]) -> None:
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path)
        for p, what in ((self.rec_path, "RecordIO file"), (self.idx_path, "RecordIO index")):
            if not p.is_file():
                raise ConfigError(f"{what} '{p}' not found")
        self.offsets: dict[int, int] = {}
        with open(self.idx_path, encoding="ascii", errors="replace") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                fields = line.split()
                try:
                    key, offset = int(fields[0]), int(fields[1])
                    if len(fields) != 2 or offset < 0:
                        raise ValueError
                except (ValueError, IndexError):
                    raise ConfigError(
                        f"RecordIO index '{self.idx_path}', line {lineno}: expected 'key<TAB>offset', "
                        f"got {line.strip()!r}"
                    ) from None
                self.offsets[key] = offset
        self.keys = list(self.offsets)
        self.size = self.rec_path.stat().st_size
        self._fd: int | None = None
        self._pid = -1

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_fd"], state["_pid"] = None, -1
        return state

    def _pread(self, n: int, offset: int) -> bytes:
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.rec_path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            self._pid = os.getpid()
        if hasattr(os, "pread"):
            return os.pread(self._fd, n, offset)
        os.lseek(self._fd, offset, os.SEEK_SET)
        return os.read(self._fd, n)

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def _truncated(self, pos: int) -> ConfigError:
        return ConfigError(
            f"RecordIO file '{self.rec_path}': truncated record at byte offset {pos} (file has {self.size} bytes)"
        )

    def read_at(self, offset: int, prefix: int | None = None) -> tuple[bytes, int]:
        """The record starting at byte `offset` (its first `prefix` bytes if given) and the offset after it.

        Every chunk header is checked, so a bad magic or a file ending mid-record raises ConfigError
        naming the byte offset.
        """
        want = 8 + (prefix if prefix is not None else 0)
        head = self._pread(want, offset)
        parts: list[bytes] = []
        have = 0
        pos = offset
        first = True
        while True:
            if len(head) < 8:
                raise self._truncated(pos)
            magic, lrec = struct.unpack_from("<II", head)
            if magic != MAGIC:
                raise ConfigError(f"RecordIO file '{self.rec_path}': bad magic 0x{magic:08x} at byte offset {pos}")
            cflag, length = lrec >> 29, lrec & LENGTH_MASK
            if cflag > 3 or (cflag in (0, 1)) != first:
                raise ConfigError(f"RecordIO file '{self.rec_path}': unexpected chunk flag {cflag} "
                                  f"at byte offset {pos}")
            if pos + 8 + length > self.size:
                raise self._truncated(pos)
            need = length if prefix is None else min(length, max(prefix - have, 0))
            if need:
                data = head[8:8 + need] if len(head) >= 8 + need else self._pread(need, pos + 8)
                if len(data) < need:  # the file shrank after it was opened
                    raise self._truncated(pos)
                parts.append(data)
                have += need
            pos += 8 + _pad4(length)
            if cflag in (0, 3):
                break
            parts.append(MAGIC_BYTES)
            have += 4
            first = False
            head = self._pread(8 if prefix is None else 8 + max(prefix - have, 0), pos)
        payload = b"".join(parts)
        return (payload if prefix is None else payload[:prefix]), pos

    def offset_of(self, key: int) -> int:
        try:
            return self.offsets[key]
        except KeyError:
            raise ConfigError(f"RecordIO index '{self.idx_path}' has no record {key}") from None

    def read_idx(self, key: int) -> bytes:
        """The payload of record `key`."""
        return self.read_at(self.offset_of(key))[0]

    def __enter__(self) -> RecordIOReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _split_rec_path(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    p = Path(path)
    if p.is_dir():
        return p / "train.rec", p / "train.idx"
    return p, p.with_suffix(".idx")


class RecordIODataset(FaceDataset):
    """insightface training set in RecordIO; `path` is a folder with train.rec + train.idx, or a .rec.

    Two layouts are told apart by record 0:

    - insightface (record 0 has flag > 0): record 0 is the header, the images are keys 1..label[0]-1
      (each may carry a scalar or a vector label, whose first value is the identity) and any records
      after them (identity ranges) are not rows.
    - header-less (record 0 has flag 0, or there is no record 0): every flag-0 record of the .idx, in
      file order, is an image. A flag > 0 record with no bytes after a 2-value whole-number label is an
      identity-range record and is skipped (identities come from the image labels); any other flag > 0
      record is refused with a ConfigError naming it, since without a header it cannot be told apart
      from an image with a vector label.

    Labels are read from each record's IRHeader at construction (remapped to 0..C-1 in sorted order,
    the identity for insightface sets); this also checks every record's chunk chain. A label that is
    not a finite whole number is a ConfigError naming the record. Key = str(record key).
    """

    def __init__(self, path: str | os.PathLike[str], image_size: int) -> None:
        rec_path, idx_path = _split_rec_path(path)
        self.reader = RecordIOReader(rec_path, idx_path)
        if not self.reader.keys:
            raise ConfigError(f"RecordIO index '{idx_path}' lists no records")
        header = self._header()
        if header is not None:
            image_keys = self._announced_keys(header)
            raw = [self._whole_label(key, scalar_label(self._header_at(key))) for key in image_keys]
        else:
            image_keys, raw = self._header_less_images()
        self._offsets = np.asarray([self.reader.offsets[k] for k in image_keys], dtype=np.int64)
        super().__init__("rec", os.path.abspath(rec_path), image_size, [str(k) for k in image_keys],
                         remap_labels(np.asarray(raw, dtype=np.int64)))

    def _where(self, key: int) -> str:
        return f"RecordIO file '{self.reader.rec_path}', record {key}"

    def _header(self) -> IRHeader | None:
        """Record 0's IRHeader when it is an insightface header (flag > 0), else None."""
        if 0 not in self.reader.offsets:
            return None
        try:
            header, _ = unpack(self.reader.read_idx(0))
        except ValueError as e:
            raise ConfigError(f"{self._where(0)}: {e}") from None
        return header if header.flag > 0 else None

    def _announced_keys(self, header: IRHeader) -> list[int]:
        """Image keys 1..label[0]-1 of an insightface header; ConfigError for a bad label[0] or a missing key."""
        first = float(cast(np.ndarray, header.label)[0])
        if not math.isfinite(first) or first != int(first) or first < 1:
            raise ConfigError(f"{self._where(0)} (header): label[0] is {first}, expected a whole number >= 1 "
                              "(one past the last image key)")
        end = int(first)
        missing = [k for k in range(1, end) if k not in self.reader.offsets]
        if missing:
            raise ConfigError(
                f"RecordIO index '{self.reader.idx_path}': header record 0 announces images 1..{end - 1} "
                f"but key {missing[0]} is missing ({len(missing)} missing)"
            )
        return list(range(1, end))

    def _header_less_images(self) -> tuple[list[int], list[int]]:
        """(image keys, raw labels) of a file without a header: its flag-0 records, identity ranges skipped."""
        keys: list[int] = []
        raw: list[int] = []
        for key in self.reader.keys:
            header = self._header_at(key)
            if header.flag == 0:
                keys.append(key)
                raw.append(self._whole_label(key, float(header.label)))
            elif not self._is_identity_range(key, header):
                raise ConfigError(
                    f"{self._where(key)} has flag {header.flag} (a vector label) but record 0 has flag 0 "
                    "(no insightface header), so it is neither an image nor an identity-range record; give the "
                    "file an insightface header record 0 or store the images with scalar labels")
        return keys, raw

    def _is_identity_range(self, key: int, header: IRHeader) -> bool:
        """True for an identity-range record: label [start, end) of whole numbers and no payload after it."""
        if header.flag != 2:
            return False
        try:
            _, rest = unpack(self.reader.read_idx(key))
        except ValueError as e:
            raise ConfigError(f"{self._where(key)}: {e}") from None
        values = cast(np.ndarray, header.label).tolist()
        return not rest and all(math.isfinite(v) and v == int(v) for v in values) and values[0] <= values[1]

    def _whole_label(self, key: int, label: float) -> int:
        if not math.isfinite(label) or label != int(label):
            raise ConfigError(f"{self._where(key)} has label {label}, expected a whole number (the identity)")
        return int(label)

    def _header_at(self, key: int) -> IRHeader:
        """The IRHeader of record `key`, reading only its first bytes."""
        offset = self.reader.offset_of(key)
        payload, _ = self.reader.read_at(offset, prefix=IR_SIZE + 4)
        flag = struct.unpack_from("<I", payload)[0] if len(payload) >= 4 else 0
        if flag > 1:
            payload, _ = self.reader.read_at(offset, prefix=IR_SIZE + 4 * flag)
        try:
            return unpack(payload)[0]
        except ValueError as e:
            raise ConfigError(f"{self._where(key)} at byte offset {offset}: {e}") from None

    def encoded(self, index: int) -> bytes:
        payload, _ = self.reader.read_at(int(self._offsets[index]))
        try:
            return unpack(payload)[1]
        except ValueError as e:
            raise CorruptImageError(self.keys[index], str(e)) from None


def identity_ranges(labels: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) image-key ranges (keys from 1) of each identity when each label's rows are contiguous, else []."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if not len(labels):
        return []
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    if len(starts) != len(np.unique(labels)):
        return []
    ends = np.r_[starts[1:], len(labels)]
    return [(int(a) + 1, int(b) + 1) for a, b in zip(starts, ends, strict=True)]


def write_rec(images: Iterable[bytes], labels: np.ndarray, rec_path: str | os.PathLike[str],
              idx_path: str | os.PathLike[str]) -> int:
    """Stream encoded images with their identity `labels` (known up front) into an insightface .rec/.idx pair.

    Images become keys 1..n (one per label, in order); record 0 is the header. When each label's rows
    are contiguous, identity records n+1.. follow (label = the [start, end) key range of the identity's
    images), as in insightface's own sets. Returns n; fewer or more images than labels is a ValueError
    (and nothing is written).
    """
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    n = len(labels)
    groups = identity_ranges(labels)
    with RecordIOWriter(rec_path, idx_path) as w:
        w.write(0, pack_header(n + 1, n + 1 + len(groups)))
        key = 0
        for key, data in enumerate(images, start=1):
            if key > n:
                raise ValueError(f"more images than the {n} labels")
            w.write(key, pack_image(int(labels[key - 1]), data))
        if key != n:
            raise ValueError(f"{key} images for {n} labels")
        for i, (first, end) in enumerate(groups):
            w.write(n + 1 + i, pack_label_array([first, end]))
    return n


def write_rec_dataset(
    images_labels: Iterable[tuple[np.ndarray | bytes, int]],
    rec_path: str | os.PathLike[str],
    idx_path: str | os.PathLike[str],
    quality: int = 95,
) -> int:
    """Write (image, label) rows as an insightface .rec/.idx pair (`write_rec`); returns the number of images.

    Images are uint8 RGB arrays (JPEG-encoded here) or already encoded bytes.
    """
    rows = [(img if isinstance(img, (bytes, bytearray)) else encode_jpeg(img, quality), int(label))
            for img, label in images_labels]
    return write_rec((bytes(data) for data, _ in rows), np.asarray([label for _, label in rows], dtype=np.int64),
                     rec_path, idx_path)
