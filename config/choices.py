"""Allowed values and shared validation rules: defined once, used by the schema's validation and by
every building block that takes the value as a plain argument."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from common.errors import ConfigError

DATA_FORMATS = ("synthetic", "folder", "rec", "list")
INPUT_LAYOUTS = ("NCHW", "NHWC")
COLOR_ORDERS = ("RGB", "BGR")
CACHE_DTYPES = ("float16", "float32")
INDEX_KINDS = ("flat", "ivf")
IN_RAM_MODES = ("auto", "always", "never")
MARGIN_HEADS = ("arcface", "cosface")
KL_DIRECTIONS = ("teacher_student", "student_teacher")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")
AMP_MODES = ("auto", "none", "bf16", "fp16")

# config key -> its allowed values (checked by `config.loader.validate`)
CHOICES: dict[str, tuple[str, ...]] = {
    "data.format": DATA_FORMATS,
    "teacher.input_layout": INPUT_LAYOUTS,
    "teacher.color": COLOR_ORDERS,
    "cache.dtype": CACHE_DTYPES,
    "cache.index": INDEX_KINDS,
    "cache.in_ram": IN_RAM_MODES,
    "loss.head": MARGIN_HEADS,
    "icd.kl_direction": KL_DIRECTIONS,
    "train.optimizer": OPTIMIZERS,
    "train.schedule": SCHEDULES,
    "train.amp": AMP_MODES,
}

# Every backbone downsamples by 16, so an input side is a multiple of 16 (insightface: 112 = 7 x 16).
IMAGE_SIDE_MULTIPLE = 16


def check_choice(value: Any, choices: Sequence[str], key: str) -> None:
    """ConfigError naming `key` unless `value` is one of `choices`."""
    if value not in choices:
        raise ConfigError(f"config key '{key}': {value!r} is not one of {', '.join(choices)}")


def check_image_side(value: Any, key: str) -> None:
    """ConfigError naming `key` unless `value` is an integer multiple of 16 (>= 16)."""
    m = IMAGE_SIDE_MULTIPLE
    if isinstance(value, bool) or not isinstance(value, int) or value < m or value % m:
        raise ConfigError(f"config key '{key}': {value!r} must be a multiple of {m} (>= {m})")
