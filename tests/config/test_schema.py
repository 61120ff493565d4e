"""One source of defaults: the shipped `pipeline.toml` states every key at its dataclass default."""
from __future__ import annotations

import tomllib
from typing import Any

from config import PipelineConfig, load_config, to_dict
from tests.conftest import REPO


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_shipped_file_equals_the_dataclass_defaults_key_for_key() -> None:
    shipped = _flatten(tomllib.loads((REPO / "pipeline.toml").read_text()))
    defaults = _flatten(to_dict(PipelineConfig()))
    assert set(shipped) == set(defaults)
    for key, value in shipped.items():
        assert value == defaults[key], key
    assert load_config(REPO / "pipeline.toml") == load_config(None) == PipelineConfig()


def test_defaults_are_insightface_conventions() -> None:
    cfg = PipelineConfig()
    assert cfg.data.image_size == 112 and cfg.student.embedding_size == 512 == cfg.teacher.embedding_size
    assert (cfg.loss.head, cfg.loss.scale, cfg.loss.margin) == ("arcface", 64.0, 0.5)
    assert (cfg.teacher.mean, cfg.teacher.std) == ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
    assert (cfg.train.optimizer, cfg.train.lr, cfg.train.momentum, cfg.train.weight_decay) == ("sgd", 0.1, 0.9, 5e-4)
