"""`checkpoints.student`: a run's student rebuilt from its checkpoint, and checkpoints that do not fit it."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from checkpoints.student import load_student
from common.errors import ConfigError
from config import load_config, to_dict
from models import build_student


def _checkpoint(tmp_path: Path, arch: str = "mobilefacenet") -> tuple[Path, dict]:
    cfg = load_config(None, ["student.embedding_size=16", "data.image_size=32", f"student.arch=\"{arch}\""])
    module = build_student(cfg.student, 32)
    state = {"modules": {"student": module.state_dict()}, "config": to_dict(cfg)}
    path = tmp_path / "ckpt.pt"
    torch.save(state, path)
    return path, state


def test_a_checkpoint_loads_back_its_student(tmp_path: Path) -> None:
    path, state = _checkpoint(tmp_path)
    module, cfg = load_student(path)
    assert cfg.student.embedding_size == 16
    assert all(torch.equal(v, state["modules"]["student"][k]) for k, v in module.state_dict().items())


@pytest.mark.parametrize("damage, message", [
    (lambda s: s["modules"]["student"].pop(next(iter(s["modules"]["student"]))), "1 missing keys"),
    (lambda s: s["config"]["student"].update(arch="iresnet18"), "for its stored student.arch = 'iresnet18'"),
    (lambda s: s.update(config=[1, 2]), "stored config is not a table"),
    (lambda s: s.update(modules={"teacher": {}}), "holds no student weights"),
])
def test_weights_that_do_not_fit_the_stored_config_are_a_config_error_naming_the_file(
        tmp_path: Path, damage: object, message: str) -> None:
    path, state = _checkpoint(tmp_path)
    damage(state)  # type: ignore[operator]
    torch.save(state, path)
    with pytest.raises(ConfigError, match=message) as err:
        load_student(path)
    assert str(path) in str(err.value)
