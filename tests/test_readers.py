"""Readers: image folders, list files, RecordIO (format, insightface convention, damage), ImageRows."""
from __future__ import annotations

import hashlib
import io
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from common.errors import ConfigError
from config import DataConfig
from readers import (
    CorruptImageError,
    FolderDataset,
    ListDataset,
    RecordIODataset,
    RecordIOReader,
    RecordIOWriter,
    build_dataset,
    decode_image,
    write_rec_dataset,
)
from readers.recordio import IR_SIZE, MAGIC, MAGIC_BYTES, encode_jpeg, pack_header, pack_image, unpack
from readers.torch_rows import ImageRows


def _image(seed: int, size: int = 24) -> np.ndarray:
    """A smooth colour image (JPEG-friendly) that differs per seed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    chans = [128 + 100 * np.sin(2 * np.pi * (rng.uniform(0.5, 2) * xx + rng.uniform(0.5, 2) * yy + rng.uniform()))
             for _ in range(3)]
    return np.stack(chans, axis=-1).astype(np.uint8)


def _save(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


# --------------------------------------------------------------------------- decode_image


def test_decode_image_resizes_and_converts_to_rgb() -> None:
    buf = io.BytesIO()
    Image.fromarray(_image(0, 20)[..., 0], "L").save(buf, format="PNG")
    out = decode_image(buf.getvalue(), "k", 16)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert np.array_equal(out[..., 0], out[..., 1])


def test_decode_image_rejects_garbage_naming_key() -> None:
    with pytest.raises(CorruptImageError) as info:
        decode_image(b"not an image at all", "id_1/x.jpg", 16)
    assert info.value.key == "id_1/x.jpg"
    assert "id_1/x.jpg" in str(info.value)
    truncated = encode_jpeg(_image(1))[:200]
    with pytest.raises(CorruptImageError):
        decode_image(truncated, "t", 16)


# --------------------------------------------------------------------------- folder


def test_folder_dataset_labels_follow_sorted_identity_names(tmp_path: Path) -> None:
    _save(tmp_path / "bob" / "2.png", _image(1))
    _save(tmp_path / "bob" / "1.jpg", _image(2))
    _save(tmp_path / "alice" / "z.bmp", _image(3))
    _save(tmp_path / "carol" / "a.jpeg", _image(4))
    (tmp_path / "empty").mkdir()
    (tmp_path / ".hidden").mkdir()
    _save(tmp_path / ".hidden" / "x.png", _image(5))
    (tmp_path / "bob" / "notes.txt").write_text("ignored")
    (tmp_path / "pairs.txt").write_text("ignored")

    ds = FolderDataset(tmp_path, 16)
    assert ds.keys == ["alice/z.bmp", "bob/1.jpg", "bob/2.png", "carol/a.jpeg"]
    assert ds.labels.tolist() == [0, 1, 1, 2]
    assert ds.labels.dtype == np.int64
    assert ds.num_classes == 3 and len(ds) == 4
    img = ds.load(2)
    assert img.shape == (16, 16, 3) and img.dtype == np.uint8
    expected = np.asarray(Image.fromarray(_image(1)).resize((16, 16), Image.Resampling.BILINEAR))
    assert np.array_equal(img, expected)

    want = hashlib.sha256("".join(f"{k}\t{v}\n" for k, v in zip(ds.keys, [0, 1, 1, 2])).encode()).hexdigest()
    assert ds.listing_sha256() == want
    assert ds.describe() == {"format": "folder", "root": str(tmp_path.resolve()), "listing_sha256": want,
                             "rows": 4, "classes": 3}


def test_folder_dataset_corrupt_file_names_key(tmp_path: Path) -> None:
    _save(tmp_path / "a" / "good.png", _image(1))
    (tmp_path / "a" / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    ds = FolderDataset(tmp_path, 16)
    bad = ds.keys.index("a/bad.jpg")
    with pytest.raises(CorruptImageError) as info:
        ds.load(bad)
    assert info.value.key == "a/bad.jpg"


def test_folder_dataset_empty_or_missing_is_config_error(tmp_path: Path) -> None:
    (tmp_path / "someone").mkdir()
    with pytest.raises(ConfigError, match="no images"):
        FolderDataset(tmp_path, 16)
    with pytest.raises(ConfigError, match="does not exist"):
        FolderDataset(tmp_path / "nope", 16)


# --------------------------------------------------------------------------- list file


def test_list_dataset_paths_and_label_remap(tmp_path: Path) -> None:
    _save(tmp_path / "imgs" / "a.png", _image(1))
    _save(tmp_path / "imgs" / "with space.png", _image(2))
    _save(tmp_path / "elsewhere" / "c.png", _image(3))
    absolute = (tmp_path / "elsewhere" / "c.png").resolve()
    lst = tmp_path / "train.lst"
    lst.write_text(f"# comment\nimgs/a.png 10\n\nimgs/with space.png\t3\n{absolute} 10\n")
    ds = ListDataset(lst, 16)
    assert ds.keys == ["imgs/a.png", "imgs/with space.png", str(absolute)]
    assert ds.labels.tolist() == [1, 0, 1]
    assert ds.num_classes == 2
    assert ds.load(1).shape == (16, 16, 3)
    assert ds.describe()["format"] == "list"


@pytest.mark.parametrize(
    "body, message",
    [
        ("a.png 0\nb.png 1\nlonely\n", r"line 3"),
        ("a.png 0\nb.png one\n", r"line 2: label 'one' is not an integer"),
        ("a.png 0\na.png 1\n", r"line 2: 'a.png' already listed on line 1"),
    ],
)
def test_list_dataset_bad_line_names_file_and_line(tmp_path: Path, body: str, message: str) -> None:
    _save(tmp_path / "a.png", _image(1))
    lst = tmp_path / "bad.lst"
    lst.write_text(body)
    with pytest.raises(ConfigError, match=message) as info:
        ListDataset(lst, 16)
    assert str(lst) in str(info.value)


def test_list_dataset_wrong_base_folder_and_missing_file(tmp_path: Path) -> None:
    lst = tmp_path / "x.lst"
    lst.write_text("missing/a.png 0\n")
    with pytest.raises(ConfigError, match="line 1: image .* not found"):
        ListDataset(lst, 16)
    with pytest.raises(ConfigError, match="not found"):
        ListDataset(tmp_path / "none.lst", 16)


# --------------------------------------------------------------------------- RecordIO format


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
    [b"", b"x", MAGIC_BYTES, MAGIC_BYTES * 3, b"ab" + MAGIC_BYTES + b"cd", b"abcd" + MAGIC_BYTES + b"efgh" + MAGIC_BYTES,
     bytes(range(256)) * 5],
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


# --------------------------------------------------------------------------- RecordIO data sets


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


# --------------------------------------------------------------------------- ImageRows, build_dataset


def test_image_rows_marks_corrupt_rows_and_collates(tmp_path: Path) -> None:
    _save(tmp_path / "a" / "1.png", _image(1))
    (tmp_path / "a" / "2.png").write_bytes(b"broken")
    _save(tmp_path / "b" / "1.png", _image(2))
    ds = FolderDataset(tmp_path, 16)
    rows = ImageRows(ds, np.array([2, 1]))
    img, label, row, ok = rows[1]
    assert (label, row, ok) == (0, 1, False) and img.dtype == torch.uint8 and not img.any()
    batch = next(iter(DataLoader(ImageRows(ds), batch_size=3)))
    images, labels, rows_t, oks = batch
    assert images.shape == (3, 16, 16, 3) and images.dtype == torch.uint8
    assert labels.tolist() == [0, 0, 1] and rows_t.tolist() == [0, 1, 2] and oks.tolist() == [True, False, True]
    assert ds.keys[int(rows_t[~oks][0])] == "a/2.png"


def test_build_dataset_formats_and_root_errors(tmp_path: Path) -> None:
    cfg = DataConfig(format="synthetic", image_size=16)
    cfg.synthetic.identities, cfg.synthetic.images_per_identity = 3, 2
    ds = build_dataset(cfg)
    assert len(ds) == 6 and ds.num_classes == 3 and ds.load(5).shape == (16, 16, 3)

    write_rec_dataset(_rec_rows(), tmp_path / "rec" / "train.rec", tmp_path / "rec" / "train.idx")
    assert len(build_dataset(DataConfig(format="rec", root=str(tmp_path / "rec"), image_size=16))) == 6
    _save(tmp_path / "faces" / "x" / "1.png", _image(0))
    assert build_dataset(DataConfig(format="folder", root=str(tmp_path / "faces"), image_size=16)).keys == ["x/1.png"]

    for fmt in ("folder", "rec", "list"):
        with pytest.raises(ConfigError, match="data.root"):
            build_dataset(DataConfig(format=fmt, root="", image_size=16))
        with pytest.raises(ConfigError, match="data.root"):
            build_dataset(DataConfig(format=fmt, root=str(tmp_path / "missing"), image_size=16))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="data.root"):
        build_dataset(DataConfig(format="folder", root=str(tmp_path / "empty"), image_size=16))
    with pytest.raises(ConfigError, match="data.format"):
        build_dataset(DataConfig(format="tfrecord", root=str(tmp_path), image_size=16))
