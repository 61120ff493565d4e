"""`cache.checksums`: per-block CRC32 of a finished cache, checked on open (sampled, full, from RAM)."""
from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import pytest

from cache import TeacherCache, layout
from cache.checksums import sample_blocks
from common.errors import ConfigError
from tests.cache.test_writer import build_cache, make_data


def corrupt_row(path: Path, row: int, dataset: str = layout.EMBEDDINGS, factor: float = 5.0) -> None:
    with h5py.File(path, "r+") as f:
        f[dataset][row] = factor * f[dataset][row]


@pytest.mark.parametrize("in_ram", ["never", "always"])
def test_a_changed_embedding_row_is_refused_naming_file_and_block(tmp_path: Path, in_ram: str) -> None:
    path = build_cache(tmp_path / "teacher.h5", make_data())  # 37 rows in blocks of 8
    TeacherCache(path, in_ram=in_ram)
    corrupt_row(path, 20)
    with pytest.raises(ConfigError, match=r"teacher\.h5.*'embeddings' rows 16\.\.23 .*delete it") as err:
        TeacherCache(path, in_ram=in_ram)
    assert "block 2 of 5" in str(err.value)
    assert TeacherCache(path, in_ram=in_ram, verify="none").num_rows == 37


def test_changed_norms_and_tables_are_refused(tmp_path: Path) -> None:
    good = build_cache(tmp_path / "teacher.h5", make_data())
    cases = ((layout.NORMS, 36, "'norms' rows 32..36"), (layout.POSITIVES, 3, "'positives' rows 0..7"),
             (layout.LABELS, 9, "'labels' rows 8..15"))
    for name, row, pattern in cases:
        bad = tmp_path / f"bad_{name}.h5"
        shutil.copyfile(good, bad)
        corrupt_row(bad, row, name, factor=2)
        with pytest.raises(ConfigError, match=pattern):
            TeacherCache(bad, in_ram="never")


def test_sampled_check_reads_first_last_and_a_fixed_sample_and_full_check_reads_all(tmp_path: Path) -> None:
    path = build_cache(tmp_path / "teacher.h5", make_data(n=400))  # 50 blocks of 8 rows
    sample = sample_blocks(50)
    assert sample == sample_blocks(50) and sample[0] == 0 and sample[-1] == 49 and len(sample) < 50
    assert sample_blocks(5) == [0, 1, 2, 3, 4]
    unsampled = next(b for b in range(50) if b not in sample)
    corrupt_row(path, unsampled * 8 + 3)
    assert TeacherCache(path, in_ram="never").num_rows == 400  # the cheap check does not see it
    with pytest.raises(ConfigError, match=f"rows {unsampled * 8}..{unsampled * 8 + 7} "):
        TeacherCache(path, in_ram="never", verify="full")
    with pytest.raises(ConfigError, match=f"rows {unsampled * 8}..{unsampled * 8 + 7} "):
        TeacherCache(path, in_ram="always")  # embeddings loaded into RAM are checked whole
    with pytest.raises(ConfigError, match="verify"):
        TeacherCache(path, verify="some")


def test_a_cache_without_checksums_is_refused(tmp_path: Path) -> None:
    path = build_cache(tmp_path / "teacher.h5", make_data())
    with h5py.File(path, "r+") as f:
        del f[layout.checksum_name(layout.EMBEDDINGS)]
    with pytest.raises(ConfigError, match="embeddings_crc32"):
        TeacherCache(path)


def test_a_file_h5py_cannot_read_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = build_cache(tmp_path / "teacher.h5", make_data())
    with h5py.File(path, "r") as f:
        at = f[layout.KEYS].id.get_offset()  # contiguous: 16-byte references into the global heap
    with open(path, "r+b") as fh:  # point the first key's reference past the end of the file
        fh.seek(at + 4)
        fh.write(b"\xff" * 8)
    with pytest.raises(ConfigError, match=r"teacher\.h5' cannot be read .*delete it"):
        TeacherCache(path, in_ram="never")  # the sampled check reads the first block of keys
    unchecked = TeacherCache(path, in_ram="never", verify="none")
    with pytest.raises(ConfigError, match=r"teacher\.h5' cannot be read .*delete it"):
        _ = unchecked.keys
