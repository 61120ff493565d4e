"""`cache.reader`: TeacherCache targets from RAM and file, in DataLoader workers, refusals, check_matches."""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from cache import TeacherCache, partial_path
from common.errors import ConfigError, PipelineError
from tests.cache.test_writer import build_cache, finish, make_attrs, make_data, open_writer, write_rows


def test_targets_from_ram_and_file_agree_and_respect_flips(tmp_path: Path) -> None:
    data = make_data(n=300, dim=16)
    path = build_cache(tmp_path / "teacher.h5", data, "float16")
    ram = TeacherCache(path, in_ram="always")
    disk = TeacherCache(path, in_ram="never")
    auto_small = TeacherCache(path, in_ram="auto", ram_limit_gb=1e-9)
    assert ram.in_ram and not disk.in_ram and not auto_small.in_ram and TeacherCache(path).in_ram
    rng = np.random.default_rng(5)
    rows = rng.integers(0, 300, size=64)
    rows[:3] = [17, 17, 299]  # duplicates and the last row
    flips = rng.integers(0, 2, size=64)
    flips[:2] = [0, 1]
    a, b = ram.targets(rows, flips), disk.targets(rows, flips)
    assert a.dtype == np.float32 and a.shape == (64, 16)
    np.testing.assert_array_equal(a, b)
    want = data["emb"][rows, flips].astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(a, want)
    assert not np.array_equal(a[0], a[1])  # the flipped view differs
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=2e-3)
    clone = pickle.loads(pickle.dumps(disk))  # reopens the file where unpickled
    np.testing.assert_array_equal(clone.targets(rows, flips), b)
    with pytest.raises(ValueError):
        ram.targets(np.array([300]), np.array([0]))


def test_targets_inside_dataloader_workers(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    data = make_data(n=120, dim=8)
    path = build_cache(tmp_path / "teacher.h5", data)
    disk = TeacherCache(path, in_ram="never")
    first = disk.targets(np.array([1, 2]), np.array([0, 1]))  # the parent holds a handle before forking

    class Batches(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 12

        def __getitem__(self, i: int) -> Any:
            rows = np.arange(i * 10, i * 10 + 10)
            return disk.targets(rows, rows % 2)

    loader = torch.utils.data.DataLoader(Batches(), batch_size=None, num_workers=2,
                                         multiprocessing_context="fork")
    got = np.concatenate([t.numpy() for t in loader])
    rows = np.arange(120)
    np.testing.assert_array_equal(got, TeacherCache(path, in_ram="always").targets(rows, rows % 2))
    np.testing.assert_array_equal(disk.targets(np.array([1, 2]), np.array([0, 1])), first)


def test_reader_refuses_missing_incomplete_or_foreign_files(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "teacher.h5"
    with pytest.raises(ConfigError, match=str(missing)):
        TeacherCache(missing)
    data = make_data()
    path = build_cache(tmp_path / "teacher.h5", data)
    for name in ("positive_sims", "identity_offsets"):
        broken = tmp_path / f"no_{name}.h5"
        shutil.copyfile(path, broken)
        with h5py.File(broken, "r+") as f:
            del f[name]
        with pytest.raises(ConfigError, match=f"'{name}'"):
            TeacherCache(broken)
    old = tmp_path / "old.h5"
    shutil.copyfile(path, old)
    with h5py.File(old, "r+") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(ConfigError, match="format_version is 99"):
        TeacherCache(old)
    writer = open_writer(tmp_path / "unfinished.h5", data, "float16")
    writer.close()
    shutil.copyfile(partial_path(tmp_path / "unfinished.h5"), tmp_path / "unfinished.h5")
    with pytest.raises(ConfigError, match="complete"):
        TeacherCache(tmp_path / "unfinished.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(ConfigError, match="text.h5"):
        TeacherCache(tmp_path / "text.h5")


def test_check_matches_names_each_differing_attribute(tmp_path: Path) -> None:
    data = make_data()
    path = build_cache(tmp_path / "teacher.h5", data)
    cache = TeacherCache(path, in_ram="never")
    attrs = make_attrs(data, "float16")
    cache.check_matches({k: attrs[k] for k in ("teacher", "dataset", "embedding_dim", "dtype")})
    cache.check_matches({"dataset.listing_sha256": "cd" * 32, "teacher.preprocessing.mean": (0.5, 0.5, 0.5)})
    with pytest.raises(ConfigError) as err:
        cache.check_matches({"dataset.listing_sha256": "00", "embedding_dim": 512, "teacher.input_size": 112,
                             "teacher.preprocessing": {"layout": "NHWC"}})
    msg = str(err.value)
    assert f'dataset.listing_sha256: cache has "{"cd" * 32}", expected "00"' in msg
    assert "embedding_dim: cache has 8, expected 512" in msg
    assert "teacher.preprocessing: cache has" in msg and "NHWC" in msg
    assert "teacher.input_size" not in msg and str(path) in msg


def test_skipped_rows_stay_undone_and_are_refused_as_targets(tmp_path: Path) -> None:
    data = make_data()
    path = tmp_path / "teacher.h5"
    writer = open_writer(path, data, "float16")
    write_rows(writer, data, np.array([r for r in range(37) if r != 6]))
    assert writer.read_view(0)[6].tolist() == [0.0] * 8
    finish(writer, data)
    cache = TeacherCache(path)
    assert cache.rows_done == 36 and not cache.done[6]
    assert np.all(cache.positives[6] == -1) and 6 not in cache.positives
    assert 6 not in cache.identity_rows and cache.identity_offsets[-1] == 36
    with pytest.raises(PipelineError, match="row 6"):
        cache.targets(np.array([5, 6]), np.array([0, 0]))
