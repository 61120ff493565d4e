"""`cli.py`: exit statuses and messages for errors that are not the pipeline's own."""
from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import invoke, tiny_settings


def test_a_full_disk_is_exit_1_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import checkpoints.format

    def no_space(obj: Any, f: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "checkpoints" / "x.pt"))

    monkeypatch.setattr(checkpoints.format.torch, "save", no_space)
    code, out, _ = invoke("train", tiny_settings(tmp_path) + ["student.arch=mobilefacenet", "train.steps=2"])
    assert code == 1, out
    assert "No space left on device writing" in out and "x.pt" in out and "MiB free" in out
    assert "Traceback" not in out


def test_usage_error_is_exit_2() -> None:
    code, out, _ = invoke("train", ["train.no_such=1"])
    assert code == 2 and "train.no_such" in out and "Traceback" not in out


def test_single_process_commands_refuse_torchrun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    code, out, _ = invoke("evaluate", tiny_settings(tmp_path))
    assert code == 2 and "`evaluate` runs in one process" in out and "extract, train, distill run there" in out
    assert not (tmp_path / "cache").exists()


def test_a_malformed_rank_variable_is_exit_2_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "zero")
    code, out, _ = invoke("train", [])
    assert code == 2 and "RANK" in out and "Traceback" not in out
