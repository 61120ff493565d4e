"""`loss.method = "auto"`: the distillation recipe chosen from the training set's images per identity.

Measured (README, "Defaults"): with one or two images per identity (LFW DevTrain split by person) the margin
head and the methods built on teacher class centres collapse the student (held-out AUC near 0.5), and FCD + RKD
with no margin head and FCD weight 10 is the best student; with many images per identity (the synthetic
default, 20 each) AdaDistill is the best student at low FAR. `auto_recipe` states that rule once; `distill`
applies it before training, logs it and saves the concrete values in the run's resolved config.
"""
from __future__ import annotations

from typing import Any

import numpy as np

AUTO = "auto"
# identities with at least this median number of training images count as "many images per identity"
MANY_IMAGES_PER_IDENTITY = 5
# the recipe for many images per identity: AdaDistill (its margin softmax against EMA teacher centres)
MANY_IMAGES_RECIPE: dict[str, Any] = {"loss.method": "adadistill"}
# the recipe for few: FCD + RKD without the margin head, FCD weight 10 (a regression onto the teacher)
FEW_IMAGES_RECIPE: dict[str, Any] = {"loss.method": "rkd", "loss.margin_weight": 0.0, "loss.fcd_weight": 10.0}
# the margin-head settings that collapse a student on few images per identity (named by the warning)
FEW_IMAGES_FIX = "loss.margin_weight=0 loss.fcd_weight=10 (or loss.method=auto)"


def median_images_per_identity(labels: np.ndarray) -> float:
    """Median count of rows per identity present in `labels` ([N] int class ids); 0.0 for no rows."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64)) if len(labels) else np.zeros(0, np.int64)
    counts = counts[counts > 0]
    return float(np.median(counts)) if len(counts) else 0.0


def auto_recipe(median_images: float, current: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The concrete `{"section.key": value}` changes `loss.method = "auto"` stands for.

    `median_images` is `median_images_per_identity` of the training rows. `current` and `defaults` map each
    key the recipe sets to its value in the run's config and at its default; a key the user moved away from
    its default keeps the user's value (only `loss.method` is always set).
    """
    recipe = MANY_IMAGES_RECIPE if median_images >= MANY_IMAGES_PER_IDENTITY else FEW_IMAGES_RECIPE
    return {k: v for k, v in recipe.items()
            if k == "loss.method" or current.get(k) == defaults.get(k)}


def few_images(median_images: float) -> bool:
    """Whether a training set is in the regime where a margin head or teacher class centres collapse a student."""
    return median_images < MANY_IMAGES_PER_IDENTITY
