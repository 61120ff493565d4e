"""`changed_sections`: what makes a checkpoint another experiment, read through the stored config."""
from __future__ import annotations

import pytest

from config import PipelineConfig, apply_overrides, to_dict
from stages.training.experiment import changed_sections


def test_same_config_and_execution_keys_do_not_count() -> None:
    cfg = PipelineConfig()
    assert changed_sections(to_dict(cfg), cfg, "ckpt", "icd") == []
    assert changed_sections(to_dict(cfg), apply_overrides(cfg, ["data.workers=7", "train.steps=99"], "test"), "ckpt",
                            "icd") == []
    old = apply_overrides(cfg, ['cache.index="flat"', 'cache.in_ram="never"', 'icd.bank_place="host"'], "test")
    assert changed_sections(to_dict(old), cfg, "ckpt", "icd") == []  # the index kind and placements change no number
    assert changed_sections(to_dict(cfg), apply_overrides(cfg, ['icd.bank_dtype="float16"'], "test"), "ckpt",
                            "icd") == ["icd"]


@pytest.mark.parametrize("change, section", [("loss.fcd_weight=3.0", "loss"), ("data.image_size=64", "data"),
                                             ('icd.distribution="per_identity"', "icd"), ("student.dropout=0.1",
                                                                                          "student"),
                                             ("train.random_share=0.0", "train"), ("rkd.angle_weight=1.0", None)])
def test_an_experiment_setting_counts(change: str, section: str | None) -> None:
    cfg = PipelineConfig()
    want = [section] if section else []
    assert changed_sections(to_dict(cfg), apply_overrides(cfg, [change], "test"), "ckpt", "icd") == want


@pytest.mark.parametrize("method, counts", [("icd", True), ("train", False), ("fcd", False), ("rkd", False),
                                           ("icd_rkd", True)])
def test_a_method_section_counts_only_for_its_method(method: str, counts: bool) -> None:
    cfg = PipelineConfig()
    changed = apply_overrides(cfg, ['icd.pairs="both"', "train.random_share=0.0"], "test")
    assert changed_sections(to_dict(cfg), changed, "ckpt", method) == (["icd", "train"] if counts else ["train"])


def test_a_checkpoint_from_before_a_key_existed_matches_its_default() -> None:
    cfg = PipelineConfig()
    stored = to_dict(cfg)
    del stored["icd"]["distribution"], stored["loss"]["margin_weight"]  # written before these keys were added
    assert changed_sections(stored, cfg, "ckpt", "icd") == []
    assert changed_sections(stored, apply_overrides(cfg, ["loss.margin_weight=0.5"], "test"), "ckpt", "icd") == ["loss"]


@pytest.mark.parametrize("method, counts", [("rkd", True), ("icd_rkd", True), ("icd", False), ("ekd", False)])
def test_the_rkd_section_counts_for_the_methods_that_read_it(method: str, counts: bool) -> None:
    cfg = PipelineConfig()
    changed = apply_overrides(cfg, ["rkd.angle_weight=10.0"], "test")
    assert changed_sections(to_dict(cfg), changed, "ckpt", method) == (["rkd"] if counts else [])
