"""The student backbone a `train`/`distill` checkpoint holds, rebuilt from the config stored inside it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from checkpoints.format import latest_checkpoint, load_checkpoint
from common.errors import ConfigError
from config import PipelineConfig, config_from_dict
from models import build_student
from models.loading import load_state_dict_checked


def is_training_checkpoint(obj: Any) -> bool:
    """True for what `save_checkpoint` wrote for a run (its modules and config), not a plain state_dict."""
    return isinstance(obj, dict) and "modules" in obj and "config" in obj


def run_checkpoint(run_dir: str | Path, key: str) -> Path:
    """The latest checkpoint of the run in `run_dir`; none -> ConfigError naming the config `key` that asked."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    ckpt = latest_checkpoint(ckpt_dir)
    if ckpt is None:
        raise ConfigError(f"{key} = 'student': no checkpoint in '{ckpt_dir}' "
                          f"(run train or distill first, or set {key} to a path)")
    return ckpt


def student_from_state(state: dict[str, Any], source: str) -> tuple[nn.Module, PipelineConfig]:
    """The checkpoint's student module with its weights loaded, and the run's config; ConfigError naming
    `source` when the stored config is not a table or the weights do not fit the student it describes."""
    if not isinstance(state.get("config"), dict):
        raise ConfigError(f"checkpoint {source}: its stored config is not a table of sections")
    modules = state.get("modules")
    if not isinstance(modules, dict) or not isinstance(modules.get("student"), dict):
        raise ConfigError(f"checkpoint {source}: holds no student weights (modules.student)")
    stored = config_from_dict(state["config"], source=source)
    module = build_student(stored.student, stored.data.image_size)
    load_state_dict_checked(module, modules["student"], f"{source} (modules.student, for its stored "
                                                        f"student.arch = {stored.student.arch!r})")
    return module, stored


def load_student(path: str | Path) -> tuple[nn.Module, PipelineConfig]:
    """Read checkpoint `path`: its student module (weights loaded) and the run's config."""
    return student_from_state(load_checkpoint(path), str(path))
