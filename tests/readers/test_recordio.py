"""`readers.recordio`: dmlc RecordIO byte layout, split records, the insightface convention, damaged files."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from common.errors import ConfigError
from readers import CorruptImageError, RecordIODataset, RecordIOReader, RecordIOWriter, decode_image, write_rec_dataset
from readers.recordio import (
    IR_FORMAT,
    IR_SIZE,
    MAGIC,
    MAGIC_BYTES,
    encode_jpeg,
    pack_header,
    pack_image,
    pack_label_array,
    unpack,
)
from tests.readers.test_base import _image


def _chunks(rec: bytes) -> list[tuple[int, int, bytes]]:
    """Walk the raw chunks of a .rec by hand: (offset, cflag, data)."""
    out, pos = [], 0
    while pos < len(rec):
        magic, lrec = struct.unpack_from("<II", rec, pos)
        assert magic == MAGIC
        length = lrec & ((1 << 29) - 1)
        out.append((pos, lrec >> 29, rec[pos + 8:pos + 8 + length]))
        pos += 8 + ((length + 3) & ~3)
    return out


def test_recordio_byte_layout_matches_dmlc(tmp_path: Path) -> None:
    rec, idx = tmp_path / "t.rec", tmp_path / "t.idx"
    with RecordIOWriter(rec, idx) as w:
        w.write(0, b"hello")
        w.write(7, b"abcd" + MAGIC_BYTES + b"ef")
    raw = rec.read_bytes()
    expected = (
        MAGIC_BYTES + struct.pack("<I", 5) + b"hello\0\0\0"
        + MAGIC_BYTES + struct.pack("<I", (1 << 29) | 4) + b"abcd"
        + MAGIC_BYTES + struct.pack("<I", (3 << 29) | 2) + b"ef\0\0"
    )
    assert raw == expected
    assert idx.read_text() == "0\t0\n7\t16\n"


@pytest.mark.parametrize(
    "payload",
    [b"", b"x", MAGIC_BYTES, MAGIC_BYTES * 3, b"ab" + MAGIC_BYTES + b"cd",
     b"abcd" + MAGIC_BYTES + b"efgh" + MAGIC_BYTES, bytes(range(256)) * 5],
)
def test_recordio_round_trip_including_split_records(tmp_path: Path, payload: bytes) -> None:
    rec, idx = tmp_path / "t.rec", tmp_path / "t.idx"
    with RecordIOWriter(rec, idx) as w:
        w.write(3, b"before")
        w.write(5, payload)
        w.write(9, b"after!")
    with RecordIOReader(rec, idx) as r:
        assert r.keys == [3, 5, 9]
        assert r.read_idx(5) == payload
        assert r.read_idx(9) == b"after!"
        assert r.read_idx(3) == b"before"


def test_recordio_writer_leaves_nothing_on_error(tmp_path: Path) -> None:
    rec, idx = tmp_path / "t.rec", tmp_path / "t.idx"
    with pytest.raises(RuntimeError):
        with RecordIOWriter(rec, idx) as w:
            w.write(0, b"x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_ir_header_pack_unpack() -> None:
    head, rest = unpack(pack_image(7.0, b"JPEG", id=11))
    assert (head.flag, head.label, head.id, rest) == (0, 7.0, 11, b"JPEG")
    head, rest = unpack(pack_header(41, 45))
    assert head.flag == 2 and head.label.tolist() == [41.0, 45.0] and rest == b""
    assert len(pack_image(0, b"")) == IR_SIZE == 24


def _rec_rows(n_ids: int = 3, per: int = 2) -> list[tuple[bytes, int]]:
    return [(encode_jpeg(_image(10 * c + i)), c) for c in range(n_ids) for i in range(per)]


def test_rec_dataset_insightface_convention(tmp_path: Path) -> None:
    rows = _rec_rows()
    assert write_rec_dataset(rows, tmp_path / "train.rec", tmp_path / "train.idx") == 6
    with RecordIOReader(tmp_path / "train.rec", tmp_path / "train.idx") as r:
        head, _ = unpack(r.read_idx(0))
        assert head.flag == 2 and head.label.tolist() == [7.0, 10.0]  # images 1..6, identities 7..9
        ident, _ = unpack(r.read_idx(8))
        assert ident.label.tolist() == [3.0, 5.0]
    for path in (tmp_path, tmp_path / "train.rec"):
        ds = RecordIODataset(path, 16)
        assert ds.keys == ["1", "2", "3", "4", "5", "6"]
        assert ds.labels.tolist() == [0, 0, 1, 1, 2, 2]
        assert ds.num_classes == 3 and ds.fmt == "rec"
        for i, (jpeg, _) in enumerate(rows):
            assert np.array_equal(ds.load(i), decode_image(jpeg, "", 16))


def test_rec_dataset_reads_split_records(tmp_path: Path) -> None:
    """IRHeader ids holding the magic word force chunks with cflag 1, 2 and 3."""
    jpegs = [encode_jpeg(_image(i)) for i in range(3)]
    split_id = MAGIC | (MAGIC << 32)
    with RecordIOWriter(tmp_path / "train.rec", tmp_path / "train.idx") as w:
        w.write(0, pack_header(4, 4))
        for key, jpeg in enumerate(jpegs, start=1):
            w.write(key, pack_image(5.0 - key, jpeg, id=split_id if key != 2 else 0))
    flags = [c[1] for c in _chunks((tmp_path / "train.rec").read_bytes())]
    assert flags == [0, 1, 2, 3, 0, 1, 2, 3]
    ds = RecordIODataset(tmp_path, 16)
    assert ds.labels.tolist() == [2, 1, 0]  # raw labels 4, 3, 2 remapped in sorted order
    for i in range(3):
        assert np.array_equal(ds.load(i), decode_image(jpegs[i], "", 16))
    head, _ = unpack(ds.reader.read_idx(1))
    assert head.id == split_id


def test_rec_dataset_without_header_uses_all_keys(tmp_path: Path) -> None:
    with RecordIOWriter(tmp_path / "a.rec", tmp_path / "a.idx") as w:
        w.write(0, pack_image(1.0, encode_jpeg(_image(0))))
        w.write(1, pack_image(0.0, encode_jpeg(_image(1))))
    ds = RecordIODataset(tmp_path / "a.rec", 16)
    assert ds.keys == ["0", "1"] and ds.labels.tolist() == [1, 0]


def test_rec_dataset_truncated_file_names_offset(tmp_path: Path) -> None:
    write_rec_dataset(_rec_rows(), tmp_path / "train.rec", tmp_path / "train.idx")
    offsets = dict(tuple(map(int, line.split("\t"))) for line in (tmp_path / "train.idx").read_text().splitlines())
    rec = tmp_path / "train.rec"
    data = rec.read_bytes()
    rec.write_bytes(data[:offsets[6] + 40])  # ends inside image 6
    with pytest.raises(ConfigError) as info:
        RecordIODataset(tmp_path, 16)
    assert str(rec) in str(info.value) and f"byte offset {offsets[6]}" in str(info.value)
    rec.write_bytes(data[:offsets[6] + 4])  # ends inside the chunk header
    with pytest.raises(ConfigError, match=f"truncated record at byte offset {offsets[6]}"):
        RecordIODataset(tmp_path, 16)


def test_rec_dataset_bad_magic_names_offset(tmp_path: Path) -> None:
    write_rec_dataset(_rec_rows(), tmp_path / "train.rec", tmp_path / "train.idx")
    offsets = dict(tuple(map(int, line.split("\t"))) for line in (tmp_path / "train.idx").read_text().splitlines())
    rec = tmp_path / "train.rec"
    data = bytearray(rec.read_bytes())
    data[offsets[3]:offsets[3] + 4] = b"\0\0\0\0"
    rec.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=f"bad magic 0x00000000 at byte offset {offsets[3]}") as info:
        RecordIODataset(tmp_path, 16)
    assert str(rec) in str(info.value)


def test_rec_index_problems_are_config_errors(tmp_path: Path) -> None:
    write_rec_dataset(_rec_rows(), tmp_path / "train.rec", tmp_path / "train.idx")
    idx = tmp_path / "train.idx"
    lines = idx.read_text().splitlines()
    idx.write_text("\n".join(lines[:2] + ["3 oops"] + lines[3:]) + "\n")
    with pytest.raises(ConfigError, match="line 3"):
        RecordIODataset(tmp_path, 16)
    idx.write_text("\n".join(line for line in lines if not line.startswith("4\t")) + "\n")
    with pytest.raises(ConfigError, match="key 4 is missing"):
        RecordIODataset(tmp_path, 16)
    idx.unlink()
    with pytest.raises(ConfigError, match="train.idx"):
        RecordIODataset(tmp_path, 16)


def test_rec_dataset_corrupt_jpeg_is_corrupt_image(tmp_path: Path) -> None:
    rows = _rec_rows(2, 1)
    rows[1] = (b"\xff\xd8 not really a jpeg", 1)
    write_rec_dataset(rows, tmp_path / "train.rec", tmp_path / "train.idx")
    ds = RecordIODataset(tmp_path, 16)
    with pytest.raises(CorruptImageError) as info:
        ds.load(1)
    assert info.value.key == "2"


def test_rec_dataset_header_less_skips_identity_records(tmp_path: Path) -> None:
    """Record 0 is an image (flag 0): the identity-range records after the images are not rows."""
    rows = _rec_rows(3, 2)
    with RecordIOWriter(tmp_path / "train.rec", tmp_path / "train.idx") as w:
        for key, (jpeg, label) in enumerate(rows):
            w.write(key, pack_image(label, jpeg))
        for c in range(3):
            w.write(len(rows) + c, pack_label_array([2 * c, 2 * c + 2]))
    ds = RecordIODataset(tmp_path, 16)
    assert len(ds) == 6 and ds.num_classes == 3
    assert ds.keys == ["0", "1", "2", "3", "4", "5"] and ds.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert np.array_equal(ds.load(5), decode_image(rows[5][0], "", 16))


def test_rec_dataset_header_less_refuses_vector_label_images(tmp_path: Path) -> None:
    with RecordIOWriter(tmp_path / "train.rec", tmp_path / "train.idx") as w:
        w.write(0, pack_image(0, encode_jpeg(_image(0))))
        w.write(1, pack_label_array([1.0, 7.0], encode_jpeg(_image(1))))
    with pytest.raises(ConfigError, match=r"record 1 .*flag 2.*record 0 has flag 0") as info:
        RecordIODataset(tmp_path, 16)
    assert "train.rec" in str(info.value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_rec_dataset_non_finite_labels_name_the_record(tmp_path: Path, bad: float) -> None:
    with RecordIOWriter(tmp_path / "h.rec", tmp_path / "h.idx") as w:
        w.write(0, struct.pack(IR_FORMAT, 2, 0.0, 0, 0) + np.asarray([bad, 3.0], "<f4").tobytes())
        w.write(1, pack_image(0, encode_jpeg(_image(0))))
        w.write(2, pack_image(0, encode_jpeg(_image(1))))
    with pytest.raises(ConfigError, match=r"h\.rec.*record 0") as info:
        RecordIODataset(tmp_path / "h.rec", 16)
    assert "label" in str(info.value)
    with RecordIOWriter(tmp_path / "i.rec", tmp_path / "i.idx") as w:
        w.write(0, pack_header(3, 3))
        w.write(1, pack_image(0, encode_jpeg(_image(0))))
        w.write(2, pack_image(bad, encode_jpeg(_image(1))))
    with pytest.raises(ConfigError, match=r"i\.rec.*record 2.*label"):
        RecordIODataset(tmp_path / "i.rec", 16)


def test_rec_dataset_says_why_an_image_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = _rec_rows(2, 1)
    rows[1] = (rows[1][0][:150], 1)
    write_rec_dataset(rows, tmp_path / "train.rec", tmp_path / "train.idx")
    ds = RecordIODataset(tmp_path, 16)
    with pytest.raises(CorruptImageError, match=r"'2': truncated"):
        ds.load(1)
    monkeypatch.setattr("readers.base.MAX_IMAGE_PIXELS", 100)
    with pytest.raises(CorruptImageError, match=r"'1': too large: 24 x 24 pixels > 100"):
        ds.load(0)


def test_identity_ranges_only_for_contiguous_labels() -> None:
    from readers.recordio import identity_ranges

    assert identity_ranges(np.array([0, 0, 1, 2, 2])) == [(1, 3), (3, 4), (4, 6)]
    assert identity_ranges(np.array([0, 1, 0])) == []
    assert identity_ranges(np.array([], dtype=np.int64)) == []
