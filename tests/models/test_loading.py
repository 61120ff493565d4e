"""`models.loading`: insightface checkpoints (plain and wrapped) reload, key mismatches are listed."""
from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

import pytest
import torch

from common.errors import ConfigError
from config.schema import TeacherConfig
from models import build_teacher, create_backbone, load_backbone_weights


def test_insightface_plain_state_dict_reloads(tmp_path: Path) -> None:
    source = create_backbone("iresnet18", 32, 16).eval()
    with torch.no_grad():
        for buf in source.buffers():
            if buf.dtype.is_floating_point:
                buf.uniform_(0.5, 1.5)
    plain = tmp_path / "backbone.pth"
    torch.save(source.state_dict(), plain)
    wrapped = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}, "epoch": 3}, wrapped)
    x = torch.randn(2, 3, 16, 16)
    for path in (plain, wrapped):
        target = create_backbone("iresnet18", 32, 16)
        digest = load_backbone_weights(target, path)
        assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
        assert torch.equal(target.eval()(x), source(x))


def test_key_mismatch_lists_keys(tmp_path: Path) -> None:
    path = tmp_path / "r18.pth"
    torch.save(create_backbone("iresnet18", 32, 16).state_dict(), path)
    with pytest.raises(ConfigError, match=r"missing keys: .*layer1\.2\."):
        load_backbone_weights(create_backbone("iresnet34", 32, 16), path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_backbone_weights(create_backbone("iresnet18", 32, 16), tmp_path / "absent.pth")


class _RunsCommand:
    """Pickles as a call to `os.system(command)`: what a malicious weights file holds."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (self.command,)


def _malicious_files(tmp_path: Path) -> list[Path]:
    """A bare payload, and one hidden beside a real state_dict, both written with `torch.save`."""
    command = f"touch {tmp_path / 'pwned'}"
    bare = tmp_path / "bare.pt"
    torch.save(_RunsCommand(command), bare)
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": create_backbone("iresnet18", 32, 16).state_dict(), "extra": _RunsCommand(command)},
               wrapped)
    return [bare, wrapped]


def test_weights_file_cannot_run_code(tmp_path: Path) -> None:
    for path in _malicious_files(tmp_path):
        with pytest.raises(ConfigError) as info:
            load_backbone_weights(create_backbone("iresnet18", 32, 16), path)
        assert not (tmp_path / "pwned").exists(), f"loading {path.name} ran its command"
        assert str(path) in str(info.value) and "state_dict()" in str(info.value)
        with pytest.raises(ConfigError) as info:
            build_teacher(TeacherConfig(arch="iresnet18", weights=str(path), embedding_size=32), 16, "cpu")
        assert not (tmp_path / "pwned").exists(), f"build_teacher on {path.name} ran its command"
        assert str(path) in str(info.value) and "torch.save" in str(info.value)


def test_plain_wrapped_and_timm_style_files_load(tmp_path: Path) -> None:
    source = create_backbone("iresnet18", 32, 16).eval()
    state = source.state_dict()
    files = {
        "plain.pth": state,
        "wrapped.pth": {"state_dict": state},
        "timm.pth.tar": {"epoch": 3, "arch": "iresnet18", "state_dict": state, "version": 2,
                         "args": argparse.Namespace(model="iresnet18", lr=0.1, sched=["cosine"])},
        "arcface_torch.pt": {"epoch": 1, "global_step": 10, "backbone": state},
    }
    x = torch.randn(2, 3, 16, 16)
    for name, obj in files.items():
        torch.save(obj, tmp_path / name)
        target = create_backbone("iresnet18", 32, 16)
        load_backbone_weights(target, tmp_path / name)
        assert torch.equal(target.eval()(x), source(x)), name
