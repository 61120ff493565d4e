"""`common.atomic`: atomic writes, and the removal of temporaries left by writers that no longer run."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common import atomic
from common.atomic import atomic_path, atomic_write_text, remove_stale_temporaries


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two" and [p.name for p in target.parent.iterdir()] == ["out.txt"]
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("three")
        raise RuntimeError("interrupted")
    assert target.read_text() == "two" and [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_temporary_name_holds_the_writer_pid(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "out.txt") as tmp:
        assert tmp.name.startswith(f".out.txt.{os.getpid()}@") and tmp.name.endswith(".tmp")
        tmp.write_text("x")


def test_an_atomic_write_removes_temporaries_of_dead_writers_only(tmp_path: Path) -> None:
    dead, host = dead_pid(), atomic.HOST
    stale = [tmp_path / f".out.txt.{dead}@{host}.abcd1234.tmp", tmp_path / f".out.txt.{dead}.x.tmp",
             tmp_path / f".checkpoint_00000012.pt.{dead}@{host}.k2j4h5g6.tmp"]
    live = [tmp_path / f".out.txt.{os.getpid()}@{host}.abcd1234.tmp", tmp_path / f".out.txt.{os.getpid()}.y.tmp",
            tmp_path / f".out.txt.{dead}@another-machine.abcd1234.tmp",  # its writer may run there
            tmp_path / f".other.{dead}.abcd1234.tmp", tmp_path / f".out.txt.{dead}.notes"]  # not of this tool
    for p in stale + live:
        p.write_bytes(b"partial")
    atomic_write_text(tmp_path / "out.txt", "done")
    assert [p.name for p in stale if p.exists()] == []
    assert [p.name for p in live if not p.exists()] == []
    assert (tmp_path / "out.txt").read_text() == "done"


def test_temporaries_named_without_pid_are_removed_only_when_old(tmp_path: Path) -> None:
    old, recent = tmp_path / ".out.txt.abcd1234.tmp", tmp_path / ".out.txt.efgh5678.tmp"
    for p in (old, recent):
        p.write_bytes(b"partial")
    past = time.time() - atomic.UNNAMED_STALE_AGE_S - 60
    os.utime(old, (past, past))
    assert remove_stale_temporaries(tmp_path / "out.txt") == [old]
    assert recent.exists() and not old.exists()
    assert remove_stale_temporaries(tmp_path / "absent" / "out.txt") == []


def test_a_folder_written_as_a_whole_gets_the_umask_s_mode_and_a_killed_one_is_cleaned_up(tmp_path: Path) -> None:
    from common.atomic import atomic_folder

    dead = dead_pid()
    stale = tmp_path / f".split.{dead}@{atomic.HOST}.abcd1234.tmp"
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "train.lst").write_text("half")
    old_umask = os.umask(0o022)
    try:
        with atomic_folder(tmp_path / "split") as tmp:
            (tmp / "train.lst").write_text("x")
    finally:
        os.umask(old_umask)
    assert (tmp_path / "split" / "train.lst").read_text() == "x"
    assert (tmp_path / "split").stat().st_mode & 0o777 == 0o755  # as mkdir gives, not mkdtemp's 0700
    assert not stale.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["split"]


def test_writing_over_a_folder_names_the_folder_not_a_temporary(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").mkdir()
    with pytest.raises(IsADirectoryError) as err:
        atomic_write_text(tmp_path / "model.onnx", "x")
    assert err.value.filename == str(tmp_path / "model.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
