"""`config.auto`: `loss.method = "auto"` chooses by the training set's median images per identity and the
teacher's compactness on them."""
from __future__ import annotations

import numpy as np

from config import PipelineConfig, value_at
from config.auto import (
    COMPACT_TEACHER,
    FEW_IMAGES_RECIPE,
    MANY_IMAGES_PER_IDENTITY,
    MANY_IMAGES_RECIPE,
    auto_recipe,
    few_images,
    median_images_per_identity,
)

KEYS = ("loss.method", "loss.margin_weight", "loss.fcd_weight")


def _values(cfg: PipelineConfig) -> dict[str, object]:
    return {k: value_at(cfg, k) for k in KEYS}


def test_median_images_per_identity_counts_present_identities_only() -> None:
    labels = np.array([0, 0, 0, 2, 5, 5, 5, 5, 5])  # identity 0: 3, 2: 1, 5: 5 (1, 3, 4 absent)
    assert median_images_per_identity(labels) == 3.0
    assert median_images_per_identity(np.zeros(0, np.int64)) == 0.0


def test_few_images_per_identity_give_the_regression_recipe() -> None:
    default = _values(PipelineConfig())
    lfw_like = np.repeat(np.arange(100), [1] * 60 + [2] * 30 + [5] * 10)  # median 1
    median = median_images_per_identity(lfw_like)
    assert few_images(median)
    assert auto_recipe(median, float("nan"), default, default) == FEW_IMAGES_RECIPE
    assert auto_recipe(median, 0.9, default, default) == FEW_IMAGES_RECIPE
    assert FEW_IMAGES_RECIPE == {"loss.method": "rkd", "loss.margin_weight": 0.0, "loss.fcd_weight": 10.0}


def test_many_images_per_identity_and_a_compact_teacher_give_adadistill() -> None:
    default = _values(PipelineConfig())
    assert not few_images(MANY_IMAGES_PER_IDENTITY)
    assert few_images(MANY_IMAGES_PER_IDENTITY - 0.5)
    assert auto_recipe(20.0, 0.83, default, default) == MANY_IMAGES_RECIPE == {"loss.method": "adadistill"}
    assert auto_recipe(MANY_IMAGES_PER_IDENTITY, COMPACT_TEACHER, default, default) == MANY_IMAGES_RECIPE


def test_many_images_with_a_loose_teacher_give_the_regression_recipe() -> None:
    """Wild real photos (median 17, teacher same-identity cosine 0.28-0.37): AdaDistill's centres are weak."""
    default = _values(PipelineConfig())
    assert auto_recipe(17.0, 0.37, default, default) == FEW_IMAGES_RECIPE
    assert auto_recipe(17.0, COMPACT_TEACHER - 0.01, default, default) == FEW_IMAGES_RECIPE
    assert auto_recipe(17.0, float("nan"), default, default) == FEW_IMAGES_RECIPE


def test_a_weight_the_user_changed_is_kept() -> None:
    default = _values(PipelineConfig())
    mine = dict(default, **{"loss.fcd_weight": 3.0})
    assert auto_recipe(1.0, float("nan"), mine, default) == {"loss.method": "rkd", "loss.margin_weight": 0.0}


def test_auto_is_the_shipped_default() -> None:
    assert PipelineConfig().loss.method == "auto"
