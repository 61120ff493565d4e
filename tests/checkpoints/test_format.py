"""`checkpoints.format`: atomic save, byte-stable files, load errors, latest and prune."""
from __future__ import annotations

from pathlib import Path
from typing import IO

import pytest
import torch

import checkpoints as ckpt
import checkpoints.format as ckpt_format
from common.errors import ConfigError


def test_save_load_round_trip(tmp_path: Path) -> None:
    state = {"step": 12, "model": {"w": torch.arange(6.0).reshape(2, 3)}, "sampler": {"epoch": 1, "position": 3},
             "rng": ckpt.capture_rng(), "config": {"lr": 0.1, "name": "x", "milestones": [0.5]}}
    path = ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path / "run", 12), state)
    assert path.name == "checkpoint_00000012.pt"
    loaded = ckpt.load_checkpoint(path)
    assert loaded["step"] == 12 and loaded["sampler"] == {"epoch": 1, "position": 3}
    assert torch.equal(loaded["model"]["w"], state["model"]["w"])
    assert loaded["config"] == state["config"]


def test_failed_save_leaves_no_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "checkpoint_00000001.pt"

    def broken_save(obj: object, f: IO[bytes]) -> None:
        f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(ckpt_format.torch, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        ckpt.save_checkpoint(target, {"step": 1})
    assert list(tmp_path.iterdir()) == []


def test_failed_save_keeps_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "checkpoint_00000001.pt"
    ckpt.save_checkpoint(target, {"step": 1})

    def interrupted(obj: object, f: IO[bytes]) -> None:
        f.write(b"par")
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt_format.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(target, {"step": 2})
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
    assert ckpt.load_checkpoint(target)["step"] == 1


def test_same_state_gives_same_bytes_whatever_the_temporary_name(tmp_path: Path) -> None:
    state = {"w": torch.arange(10.0)}
    a = ckpt.save_checkpoint(tmp_path / "a.pt", state).read_bytes()
    b = ckpt.save_checkpoint(tmp_path / "b" / "backbone.pth", state).read_bytes()
    assert a == b


def test_missing_and_corrupt_checkpoints_are_config_errors(tmp_path: Path) -> None:
    missing = tmp_path / "checkpoint_00000005.pt"
    with pytest.raises(ConfigError, match="checkpoint_00000005.pt"):
        ckpt.load_checkpoint(missing)
    good = ckpt.save_checkpoint(tmp_path / "good.pt", {"w": torch.ones(100)})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ConfigError, match="truncated.pt"):
        ckpt.load_checkpoint(truncated)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ConfigError, match="garbage.pt"):
        ckpt.load_checkpoint(garbage)
    not_dict = ckpt.save_checkpoint(tmp_path / "list.pt", [1, 2])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="expected a dict"):
        ckpt.load_checkpoint(not_dict)


def test_latest_and_prune(tmp_path: Path) -> None:
    assert ckpt.latest_checkpoint(tmp_path / "absent") is None
    assert ckpt.latest_checkpoint(tmp_path) is None
    for step in (5, 100, 20, 9):
        ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, step), {"step": step})
    for decoy in ("checkpoint_latest.pt", ".checkpoint_00000200.pt.abc.tmp", "checkpoint_00000300.pt.tmp",
                  "checkpoint_123.pt"):
        (tmp_path / decoy).write_bytes(b"x")
    assert ckpt.latest_checkpoint(tmp_path) == tmp_path / "checkpoint_00000100.pt"
    big = ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, 123456789), {"step": 123456789})
    assert ckpt.latest_checkpoint(tmp_path) == big
    removed = ckpt.prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in removed) == ["checkpoint_00000005.pt", "checkpoint_00000009.pt",
                                                "checkpoint_00000020.pt"]
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [100, 123456789]
    assert (tmp_path / "checkpoint_latest.pt").exists()
    with pytest.raises(ConfigError):
        ckpt.prune_checkpoints(tmp_path, keep=0)
