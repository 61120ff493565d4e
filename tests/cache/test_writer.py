"""`cache.writer`: HDF5 round trip, crash-safe resume (including a real kill -9), fingerprint checks."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from cache import CacheWriter, TeacherCache, build_positives, identity_csr, layout, partial_path
from common.errors import ConfigError
from tests.conftest import REPO


def make_data(n: int = 37, dim: int = 8, classes: int = 5, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, 2, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
    labels = np.arange(n) % classes
    keys = [f"id{lab:02d}/img_{i:03d}.jpg" for i, lab in enumerate(labels)]
    return {"emb": emb, "labels": labels, "keys": keys, "classes": classes}


def make_attrs(data: dict[str, Any], dtype: str, arch: str = "iresnet50") -> dict[str, Any]:
    return {
        "teacher": {"arch": arch, "weights_sha256": "ab" * 32, "input_size": 112,
                    "preprocessing": {"layout": "NCHW", "color": "RGB", "mean": [0.5] * 3, "std": [0.5] * 3}},
        "dataset": {"format": "folder", "root": "/data/faces", "listing_sha256": "cd" * 32,
                    "rows": len(data["labels"]), "classes": data["classes"]},
        "embedding_dim": data["emb"].shape[2],
        "dtype": dtype,
        "tool_version": "0.1.0",
        "config_hash": "ef" * 8,
    }


def open_writer(path: Path, data: dict[str, Any], dtype: str, **kw: Any) -> CacheWriter:
    attrs = kw.pop("attrs", None) or make_attrs(data, dtype)
    return CacheWriter.open(path, n_rows=len(data["labels"]), dim=data["emb"].shape[2], dtype=dtype,
                            labels=data["labels"], keys=data["keys"], attrs=attrs, chunk_rows=kw.pop("chunk_rows", 8),
                            **kw)


def write_rows(writer: CacheWriter, data: dict[str, Any], rows: np.ndarray, block: int = 10) -> None:
    for start in range(0, len(rows), block):
        r = rows[start:start + block]
        writer.write(r, data["emb"][r])


def finish(writer: CacheWriter, data: dict[str, Any], k: int = 3) -> Path:
    done = writer.done_mask()
    labels = np.where(done, data["labels"], -1)
    pos, sims = build_positives(writer.read_view(0), labels, k)
    rows, offsets = identity_csr(labels, data["classes"])
    return writer.finalize(positives=pos, positive_sims=sims, identity_rows=rows, identity_offsets=offsets)


def build_cache(path: Path, data: dict[str, Any], dtype: str = "float16") -> Path:
    writer = open_writer(path, data, dtype)
    write_rows(writer, data, np.arange(len(data["labels"])))
    return finish(writer, data)


def contents(path: Path) -> dict[str, Any]:
    """Every dataset value and attribute of an HDF5 file, for equality checks."""
    with h5py.File(path, "r") as f:
        out: dict[str, Any] = {f"attr:{k}": layout.decode_attr(v) for k, v in f.attrs.items()}
        for name in f:
            out[name] = f[name].asstr()[()].tolist() if name == layout.KEYS else f[name][()]
    return out


def assert_same_contents(a: Path, b: Path) -> None:
    ca, cb = contents(a), contents(b)
    assert sorted(ca) == sorted(cb)
    for name in ca:
        if isinstance(ca[name], np.ndarray):
            assert ca[name].dtype == cb[name].dtype, name
            np.testing.assert_array_equal(ca[name], cb[name], err_msg=name)
        else:
            assert ca[name] == cb[name], name


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_round_trip_datasets_and_attrs(tmp_path: Path, dtype: str) -> None:
    data = make_data()
    path = build_cache(tmp_path / "teacher.h5", data, dtype)
    assert path.exists() and not partial_path(path).exists()
    with h5py.File(path, "r") as f:
        assert set(layout.REQUIRED_DATASETS) <= set(f)
        emb = f[layout.EMBEDDINGS]
        assert emb.shape == (37, 2, 8) and emb.dtype == np.dtype(dtype) and emb.chunks == (8, 2, 8)
        assert f[layout.LABELS].dtype == np.int64 and f[layout.POSITIVES].dtype == np.int64
        assert f[layout.POSITIVE_SIMS].dtype == np.float16 and f[layout.DONE].dtype == bool
        assert h5py.check_string_dtype(f[layout.KEYS].dtype).encoding == "utf-8"
        assert isinstance(f.attrs["teacher"], str) and json.loads(f.attrs["views"]) == ["original", "hflip"]
    cache = TeacherCache(path, in_ram="never")
    assert cache.attrs["format_version"] == layout.FORMAT_VERSION and cache.attrs["complete"] is True
    assert cache.embedding_dim == 8 and cache.dtype == dtype and cache.attrs["dtype"] == dtype
    assert cache.teacher_fingerprint["preprocessing"]["mean"] == [0.5] * 3
    assert cache.dataset_fingerprint["rows"] == 37 and cache.attrs["config_hash"] == "ef" * 8
    assert cache.keys == data["keys"] and cache.labels.tolist() == data["labels"].tolist()
    assert cache.rows_done == 37 and cache.num_classes == 5
    tol = 2e-3 if dtype == "float16" else 0.0
    np.testing.assert_allclose(cache.read_view(1), data["emb"][:, 1], atol=tol)
    rows, offsets = identity_csr(data["labels"], 5)
    np.testing.assert_array_equal(cache.identity_rows, rows)
    np.testing.assert_array_equal(cache.identity_offsets, offsets)
    pos, sims = build_positives(data["emb"][:, 0], data["labels"], 3)
    np.testing.assert_array_equal(cache.positives, pos)
    np.testing.assert_allclose(cache.positive_sims.astype(np.float32), sims, atol=3e-3)


def test_resume_after_close_without_finalize_equals_uninterrupted(tmp_path: Path) -> None:
    data = make_data()
    reference = build_cache(tmp_path / "ref" / "teacher.h5", data)
    path = tmp_path / "run" / "teacher.h5"
    writer = open_writer(path, data, "float16")
    write_rows(writer, data, np.arange(0, 20), block=7)
    writer.write(np.array([33, 25]), data["emb"][[33, 25]])  # unsorted, scattered rows
    writer.close()  # a crash: no finalize
    assert not path.exists() and partial_path(path).exists()
    writer = open_writer(path, data, "float16")
    assert writer.resumed
    pending = writer.pending_rows()
    assert pending.tolist() == [r for r in range(20, 37) if r not in (25, 33)]
    write_rows(writer, data, pending, block=5)
    finish(writer, data)
    assert_same_contents(reference, path)


CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    sys.path.insert(0, {repo!r})
    from cache import CacheWriter
    rng = np.random.default_rng(7)
    n, dim = {n}, {dim}
    emb = rng.standard_normal((n, 2, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
    labels = np.arange(n) % 9
    keys = ["k%04d" % i for i in range(n)]
    attrs = {{"teacher": {{"arch": "t"}}, "dataset": {{"rows": n, "classes": 9}}}}
    w = CacheWriter.open({path!r}, n_rows=n, dim=dim, dtype="float16", labels=labels, keys=keys, attrs=attrs,
                         chunk_rows=16)
    pending = w.pending_rows()
    print("open", len(pending), flush=True)
    for start in range(0, len(pending), 6):
        r = pending[start:start + 6]
        w.write(r, emb[r])
        print("block", flush=True)
        time.sleep(0.001)
    print("end", flush=True)
""")


def test_kill_9_mid_write_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    n, dim = 600, 32
    rng = np.random.default_rng(7)
    emb = rng.standard_normal((n, 2, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
    data = {"emb": emb, "labels": np.arange(n) % 9, "keys": [f"k{i:04d}" for i in range(n)], "classes": 9}
    attrs = {"teacher": {"arch": "t"}, "dataset": {"rows": n, "classes": 9}}
    reference = build_cache_with(tmp_path / "ref.h5", data, attrs)
    path = tmp_path / "killed.h5"
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(repo=str(REPO), n=n, dim=dim, path=str(path)))
    killed_with_rows_left = 0
    for delay in (0.0, 0.013, 0.029, 0.047):
        child = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        first = child.stdout.readline()
        assert first.startswith("open"), first
        left = int(first.split()[1])
        child.stdout.readline()
        time.sleep(delay)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        assert child.returncode == -signal.SIGKILL
        killed_with_rows_left += left > 0
        with h5py.File(partial_path(path), "r") as f:  # the work file stays a readable HDF5 file
            assert f[layout.DONE][()].sum() > 0
    assert killed_with_rows_left >= 2
    writer = CacheWriter.open(path, n_rows=n, dim=dim, dtype="float16", labels=data["labels"],
                              keys=data["keys"], attrs=attrs, chunk_rows=16)
    assert writer.resumed
    write_rows(writer, data, writer.pending_rows(), block=6)
    finish(writer, data)
    assert_same_contents(reference, path)


def build_cache_with(path: Path, data: dict[str, Any], attrs: dict[str, Any]) -> Path:
    writer = CacheWriter.open(path, n_rows=len(data["labels"]), dim=data["emb"].shape[2], dtype="float16",
                              labels=data["labels"], keys=data["keys"], attrs=attrs, chunk_rows=16)
    write_rows(writer, data, np.arange(len(data["labels"])), block=50)
    return finish(writer, data)


def test_interrupted_finalize_keeps_the_work_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_data()
    reference = build_cache(tmp_path / "ref" / "teacher.h5", data)
    path = tmp_path / "run" / "teacher.h5"
    writer = open_writer(path, data, "float16")
    write_rows(writer, data, np.arange(37))

    def torn_copy(src: Any, dst: Any) -> None:
        Path(dst).write_bytes(Path(src).read_bytes()[:1000])
        raise OSError("disk full")

    monkeypatch.setattr("cache.writer.shutil.copyfile", torn_copy)
    with pytest.raises(OSError, match="disk full"):
        finish(writer, data)
    monkeypatch.undo()
    assert not path.exists() and sorted(p.name for p in path.parent.iterdir()) == ["teacher.h5.partial"]
    writer = open_writer(path, data, "float16")
    assert writer.resumed and len(writer.pending_rows()) == 0
    finish(writer, data)
    assert_same_contents(reference, path)


def test_torn_rows_are_redone_and_corrupt_work_file_starts_over(tmp_path: Path, caplog: Any) -> None:
    data = make_data()
    path = tmp_path / "teacher.h5"
    writer = open_writer(path, data, "float16")
    write_rows(writer, data, np.arange(0, 16))
    writer.close()
    with h5py.File(partial_path(path), "r+") as f:  # done set for rows whose embeddings never landed
        f[layout.DONE][20:24] = True
        f[layout.EMBEDDINGS][3] = np.zeros((2, 8))
    writer = open_writer(path, data, "float16")
    assert writer.pending_rows().tolist() == [3] + list(range(16, 37))
    writer.close()
    partial_path(path).write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)  # a torn file
    with caplog.at_level("WARNING"):
        writer = open_writer(path, data, "float16")
    assert "cannot be opened" in caplog.text
    assert len(writer.pending_rows()) == 37
    writer.close()


def test_fingerprint_mismatch_is_refused_naming_the_attribute(tmp_path: Path) -> None:
    data = make_data()
    path = tmp_path / "teacher.h5"
    writer = open_writer(path, data, "float16")
    write_rows(writer, data, np.arange(10))
    writer.close()
    with pytest.raises(ConfigError, match=r"teacher: partial file has .*iresnet50.*this run has .*iresnet100"):
        open_writer(path, data, "float16", attrs=make_attrs(data, "float16", arch="iresnet100"))
    with pytest.raises(ConfigError, match="dtype"):
        open_writer(path, data, "float32")
    other_keys = dict(data, keys=[*data["keys"][:5], "moved.jpg", *data["keys"][6:]])
    with pytest.raises(ConfigError, match="keys: row 5"):
        open_writer(path, other_keys, "float16")
    assert partial_path(path).exists()
    writer = open_writer(path, data, "float16", attrs=make_attrs(data, "float16", arch="iresnet100"), fresh=True)
    assert not writer.resumed and len(writer.pending_rows()) == 37
    writer.close()


def test_write_rejects_bad_embeddings(tmp_path: Path) -> None:
    data = make_data()
    with open_writer(tmp_path / "t.h5", data, "float32") as writer:
        with pytest.raises(ValueError, match="row 4"):
            writer.write(np.array([3, 4]), np.stack([data["emb"][3], 2 * data["emb"][4]]))
        with pytest.raises(ValueError, match="twice"):
            writer.write(np.array([3, 3]), data["emb"][[3, 3]])
        with pytest.raises(ValueError, match="shape"):
            writer.write(np.array([3]), data["emb"][3:4, :1])
        assert len(writer.pending_rows()) == 37


def test_a_work_file_in_use_by_another_process_is_refused(tmp_path: Path) -> None:
    data = make_data()
    path = tmp_path / "teacher.h5"
    open_writer(path, data, "float16").close()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time, h5py\nf = h5py.File(sys.argv[1], 'r+')\nprint('held', flush=True)\n"
         "time.sleep(60)", str(partial_path(path))], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match="another process"):
            open_writer(path, data, "float16")
    finally:
        holder.kill()
        holder.wait()
    assert partial_path(path).exists()


def test_a_format_2_work_file_resumes_and_is_finished_as_the_current_format(tmp_path: Path) -> None:
    data = make_data()
    path = tmp_path / "teacher.h5"
    writer = open_writer(path, data, "float16")
    write_rows(writer, data, np.arange(20))
    writer.close()
    with h5py.File(partial_path(path), "r+") as f:  # written before checksums were added (same work-file layout)
        f.attrs[layout.ATTR_FORMAT_VERSION] = 2
    writer = open_writer(path, data, "float16")
    assert writer.resumed and writer.rows_done == 20
    write_rows(writer, data, writer.pending_rows())
    finish(writer, data)
    cache = TeacherCache(path, verify="full")
    assert cache.attrs["format_version"] == layout.FORMAT_VERSION == 3 and cache.attrs["checksum_rows"] == 8


def test_finalize_in_place_when_the_disk_has_no_room_for_a_copy(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import cache.writer as writer_module

    data = make_data()
    copied = build_cache(tmp_path / "copied" / "teacher.h5", data)
    monkeypatch.setattr(writer_module, "has_room_for_copy", lambda path: False)
    moved = build_cache(tmp_path / "moved" / "teacher.h5", data)
    assert not partial_path(moved).exists()
    assert sorted(p.name for p in moved.parent.iterdir()) == ["teacher.h5"]
    assert_same_contents(copied, moved)
    with TeacherCache(moved, verify="full") as cache:
        assert cache.rows_done == len(data["labels"])
