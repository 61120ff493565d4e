"""`models.loading`: insightface checkpoints (plain and wrapped) reload, key mismatches are listed."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from common.errors import ConfigError
from models import create_backbone, load_backbone_weights


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
