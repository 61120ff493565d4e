"""`changed_sections`: what makes a checkpoint another experiment, read through the stored config."""
from __future__ import annotations

import pytest

from config import PipelineConfig, apply_overrides, to_dict
from stages.training.experiment import changed_sections


def test_same_config_and_execution_keys_do_not_count() -> None:
    cfg = PipelineConfig()
    assert changed_sections(to_dict(cfg), cfg, "ckpt") == []
    assert changed_sections(to_dict(cfg), apply_overrides(cfg, ["data.workers=7"], "test"), "ckpt") == []


@pytest.mark.parametrize("change, section", [("loss.fcd_weight=3.0", "loss"), ("data.image_size=64", "data"),
                                             ('icd.distribution="per_identity"', "icd"), ("student.dropout=0.1",
                                                                                          "student")])
def test_an_experiment_setting_counts(change: str, section: str) -> None:
    cfg = PipelineConfig()
    assert changed_sections(to_dict(cfg), apply_overrides(cfg, [change], "test"), "ckpt") == [section]


def test_a_checkpoint_from_before_a_key_existed_matches_its_default() -> None:
    cfg = PipelineConfig()
    stored = to_dict(cfg)
    del stored["icd"]["distribution"], stored["loss"]["margin_weight"]  # written before these keys were added
    assert changed_sections(stored, cfg, "ckpt") == []
    assert changed_sections(stored, apply_overrides(cfg, ["loss.margin_weight=0.5"], "test"), "ckpt") == ["loss"]
