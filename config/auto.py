"""`loss.method = "auto"`: the distillation recipe chosen from the training set's images per identity and
how compact the teacher holds its training identities.

Measured (docs/training.md, "Defaults"): with one or two images per identity (LFW DevTrain split by person) the margin
head and the methods built on teacher class centres collapse the student (held-out AUC near 0.5), and FCD + RKD
with no margin head and FCD weight 10 is the best student. With many images per identity AdaDistill is the
best student at low FAR where the teacher's classes are compact (the synthetic default: 20 images each, the
teacher's mean same-identity cosine on training images 0.83), and far below the regression recipe where
they are not (wild real photos with a median of 17 faces, teacher cosine 0.28-0.37: its class centres are
weak targets). `auto_recipe` states that rule once; `distill` applies it before training, logs it and saves
the concrete values in the run's resolved config.
"""
from __future__ import annotations

from typing import Any

import numpy as np

AUTO = "auto"
# identities with at least this median number of training images count as "many images per identity"
MANY_IMAGES_PER_IDENTITY = 5
# ... and a teacher whose mean same-identity cosine on training images is at least this (its centres are
# targets worth a margin softmax); measured between 0.37 (real wild photos: AdaDistill fails) and 0.83
# (synthetic default: AdaDistill leads at low FAR)
COMPACT_TEACHER = 0.5
# the recipe for many images per identity and a compact teacher: AdaDistill (margin softmax against EMA
# teacher centres)
MANY_IMAGES_RECIPE: dict[str, Any] = {"loss.method": "adadistill"}
# the recipe otherwise: FCD + RKD without the margin head, FCD weight 10 (a regression onto the teacher)
FEW_IMAGES_RECIPE: dict[str, Any] = {"loss.method": "rkd", "loss.margin_weight": 0.0, "loss.fcd_weight": 10.0}
# the margin-head settings that collapse a student on few images per identity (named by the warning)
FEW_IMAGES_FIX = "loss.margin_weight=0 loss.fcd_weight=10 (or loss.method=auto)"


def median_images_per_identity(labels: np.ndarray) -> float:
    """Median count of rows per identity present in `labels` ([N] int class ids); 0.0 for no rows."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64)) if len(labels) else np.zeros(0, np.int64)
    counts = counts[counts > 0]
    return float(np.median(counts)) if len(counts) else 0.0


def auto_recipe(median_images: float, teacher_intra: float, current: dict[str, Any],
                defaults: dict[str, Any]) -> dict[str, Any]:
    """The concrete `{"section.key": value}` changes `loss.method = "auto"` stands for.

    `median_images` is `median_images_per_identity` of the training rows, `teacher_intra` the cached
    teacher's mean same-identity cosine on training images (NaN when no identity has two). AdaDistill
    needs both many images and a compact teacher; anything else gets the regression recipe. `current` and
    `defaults` map each key the recipe sets to its value in the run's config and at its default; a key the
    user moved away from its default keeps the user's value (only `loss.method` is always set).
    """
    many = median_images >= MANY_IMAGES_PER_IDENTITY and teacher_intra >= COMPACT_TEACHER
    recipe = MANY_IMAGES_RECIPE if many else FEW_IMAGES_RECIPE
    return {k: v for k, v in recipe.items()
            if k == "loss.method" or current.get(k) == defaults.get(k)}


def few_images(median_images: float) -> bool:
    """Whether a training set is in the regime where a margin head or teacher class centres collapse a student."""
    return median_images < MANY_IMAGES_PER_IDENTITY
