"""Allowed values and shared validation rules: defined once, used by the schema's validation and by
every building block that takes the value as a plain argument."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from common.errors import ConfigError

DATA_FORMATS = ("synthetic", "folder", "rec", "list")
INPUT_LAYOUTS = ("NCHW", "NHWC")
COLOR_ORDERS = ("RGB", "BGR")
CACHE_DTYPES = ("float16", "float32")
INDEX_KINDS = ("auto", "flat", "ivf", "ivfpq")
IN_RAM_MODES = ("auto", "always", "never")
MARGIN_HEADS = ("arcface", "cosface")
KL_DIRECTIONS = ("teacher_student", "student_teacher")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")
AMP_MODES = ("auto", "none", "bf16", "fp16")
# `loss.method`: the distillation recipe of `distill` (stages.training.methods)
METHODS = ("icd", "fcd", "adadistill", "ekd", "rkd", "margindistillation", "icd_rkd")
# the key's values: a method, or "auto" (chosen from the training set's images per identity, `config.auto`)
LOSS_METHODS = ("auto", *METHODS)
# where SDC's positive pairs come from (DESIGN.md section 1): the batch's identity groups, the feature bank, or both
PAIR_SOURCES = ("both", "batch", "bank")
# SDC's distributions: one over all the step's positive pairs (ICD-Face), or one per identity
SDC_DISTRIBUTIONS = ("pooled", "per_identity")
# which same-identity rows fill an anchor's group: its most similar teacher positives, its least similar, or any
POSITIVE_POLICIES = ("nearest", "farthest", "random")
# the feature bank's storage dtype, and where it lives: the training device, or (pinned) host memory
BANK_DTYPES = ("float32", "float16", "bfloat16")
BANK_PLACES = ("device", "host")
TENSORBOARD_MODES = ("auto", "always", "never")  # train.tensorboard: auto writes when the package is installed
EXPORT_DTYPES = ("float32", "float16")  # the weights and input of an exported ONNX model
ALIGN_DETECTORS = ("hog+cnn", "hog", "cnn")  # `align.detector`: dlib's detectors, tried in this order
ALIGN_PICKS = ("center", "largest", "consensus")  # `align.pick`: which face of a photo (alignment.pick)
ALIGN_FALLBACKS = ("skip", "center_crop")  # `align.fallback`: a photo with no qualifying face
ALIGN_FORMATS = ("png", "jpeg")

# config key -> its allowed values (checked by `config.loader.validate`)
CHOICES: dict[str, tuple[str, ...]] = {
    "data.format": DATA_FORMATS,
    "teacher.input_layout": INPUT_LAYOUTS,
    "teacher.color": COLOR_ORDERS,
    "cache.dtype": CACHE_DTYPES,
    "cache.index": INDEX_KINDS,
    "cache.in_ram": IN_RAM_MODES,
    "loss.method": LOSS_METHODS,
    "loss.head": MARGIN_HEADS,
    "adadistill.head": MARGIN_HEADS,
    "icd.kl_direction": KL_DIRECTIONS,
    "icd.pairs": PAIR_SOURCES,
    "icd.distribution": SDC_DISTRIBUTIONS,
    "icd.bank_dtype": BANK_DTYPES,
    "icd.bank_place": BANK_PLACES,
    "train.positive_policy": POSITIVE_POLICIES,
    "train.optimizer": OPTIMIZERS,
    "train.schedule": SCHEDULES,
    "train.amp": AMP_MODES,
    "train.tensorboard": TENSORBOARD_MODES,
    "export.dtype": EXPORT_DTYPES,
    "align.detector": ALIGN_DETECTORS,
    "align.pick": ALIGN_PICKS,
    "align.fallback": ALIGN_FALLBACKS,
    "align.format": ALIGN_FORMATS,
}

# opsets `export` accepts: torch's legacy ONNX exporter (`dynamo=False`) writes 7..20 (its default 20)
ONNX_OPSETS = (9, 20)

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


@dataclass(frozen=True)
class Range:
    """An interval of allowed numbers; None is unbounded on that side."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def contains(self, value: float) -> bool:
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)

    def describe(self) -> str:
        lo = "" if self.lo is None else f"{'>' if self.lo_open else '>='} {self.lo:g}"
        hi = "" if self.hi is None else f"{'<' if self.hi_open else '<='} {self.hi:g}"
        return " and ".join(s for s in (lo, hi) if s)


POSITIVE = Range(0, lo_open=True)
NON_NEGATIVE = Range(0)
AT_LEAST_ONE = Range(1)
FRACTION = Range(0, 1, hi_open=True)

# config key -> its allowed numbers (checked by `config.loader.validate`; non-finite numbers are
# refused for every key when the file is read)
RANGES: dict[str, Range] = {
    "data.workers": NON_NEGATIVE,
    "data.synthetic.identities": AT_LEAST_ONE, "data.synthetic.images_per_identity": AT_LEAST_ONE,
    "data.synthetic.seed": NON_NEGATIVE, "data.synthetic.difficulty": NON_NEGATIVE,
    "data.synthetic.heldout_identities": Range(2), "data.synthetic.heldout_images_per_identity": Range(2),
    "data.synthetic.heldout_pairs": AT_LEAST_ONE,
    "teacher.embedding_size": AT_LEAST_ONE, "teacher.input_size": NON_NEGATIVE, "teacher.batch_size": AT_LEAST_ONE,
    "student.embedding_size": AT_LEAST_ONE, "student.dropout": FRACTION,
    "cache.positives_k": AT_LEAST_ONE, "cache.ivf_nlist": NON_NEGATIVE, "cache.ivf_nprobe": AT_LEAST_ONE,
    "cache.pq_m": AT_LEAST_ONE,
    "cache.ram_limit_gb": NON_NEGATIVE, "cache.chunk_rows": AT_LEAST_ONE,
    "loss.scale": POSITIVE, "loss.margin": NON_NEGATIVE, "loss.margin_weight": NON_NEGATIVE,
    "loss.sample_rate": Range(0, 1, lo_open=True),
    "loss.fcd_weight": NON_NEGATIVE,
    "loss.sdc_weight": NON_NEGATIVE,
    "loss.impostor_sdc_weight": NON_NEGATIVE,
    "icd.bank_size": AT_LEAST_ONE, "icd.max_age": NON_NEGATIVE, "icd.sigma": POSITIVE,
    # the similarity grid has 2 / grid_step + 1 nodes: 1e-4 is 20001 of them
    "icd.grid_step": Range(1e-4, 1.0), "icd.kl_eps": POSITIVE, "icd.warmup_epochs": NON_NEGATIVE,
    "rkd.distance_weight": NON_NEGATIVE, "rkd.angle_weight": NON_NEGATIVE,
    "ekd.weight": NON_NEGATIVE, "ekd.temperature": POSITIVE, "ekd.top_k": AT_LEAST_ONE,
    "ekd.pos_weight": NON_NEGATIVE, "ekd.neg_weight": NON_NEGATIVE, "ekd.momentum": Range(0, 1, lo_open=True),
    "adadistill.scale": POSITIVE, "adadistill.margin": NON_NEGATIVE,
    "margindistillation.scale": POSITIVE, "margindistillation.margin_min": NON_NEGATIVE,
    "margindistillation.margin_max": Range(0, math.pi, hi_open=True),
    "train.steps": NON_NEGATIVE, "train.epochs": NON_NEGATIVE, "train.batch_size": Range(2),
    "train.identities_per_batch": NON_NEGATIVE, "train.images_per_identity": Range(2),
    "train.random_share": Range(0, 1), "train.lr": POSITIVE, "train.momentum": FRACTION,
    "train.weight_decay": NON_NEGATIVE, "train.warmup_steps": NON_NEGATIVE, "train.gamma": POSITIVE,
    "train.grad_accum": AT_LEAST_ONE,
    "train.grad_clip": NON_NEGATIVE, "train.checkpoint_every": AT_LEAST_ONE, "train.log_every": AT_LEAST_ONE,
    "train.eval_every": NON_NEGATIVE,
    "eval.batch_size": AT_LEAST_ONE, "eval.nfolds": Range(2), "eval.n_boot": AT_LEAST_ONE,
    "demo.teacher_embedding_size": AT_LEAST_ONE, "demo.teacher_epochs": POSITIVE, "demo.teacher_lr": POSITIVE,
    "demo.teacher_random_share": Range(0, 1),
    "demo.student_embedding_size": AT_LEAST_ONE, "demo.student_epochs": POSITIVE,
    "demo.warmup_steps": NON_NEGATIVE, "demo.scale": POSITIVE, "demo.fcd_weight": NON_NEGATIVE,
    "split.seed": NON_NEGATIVE, "split.heldout_fraction": Range(0, 1, lo_open=True, hi_open=True),
    "split.impostor_pairs": NON_NEGATIVE, "split.template_size": AT_LEAST_ONE,
    "split.impostor_template_pairs": NON_NEGATIVE,
    "export.opset": Range(ONNX_OPSETS[0], ONNX_OPSETS[1]),
    "align.upsample": Range(0, 3), "align.max_side": NON_NEGATIVE, "align.min_face": Range(0, 1),
    "align.center_gate": Range(0, 1), "align.crop_side": Range(0, 2, lo_open=True),
    "align.max_shrink": NON_NEGATIVE, "align.jpeg_quality": Range(1, 100), "align.sheet_faces": AT_LEAST_ONE,
}


def check_range(value: float, allowed: Range, key: str) -> None:
    """ConfigError naming `key` unless `value` lies in `allowed`."""
    if not allowed.contains(value):
        raise ConfigError(f"config key '{key}': {value!r} must be {allowed.describe()}")


def check_bandwidth(sigma: float, grid_step: float) -> None:
    """ConfigError naming `icd.sigma` and `icd.grid_step` unless sigma >= grid_step.

    Below one grid step the kernel density of `losses.sdc.kernel_density` is a comb: its value and
    gradient depend on where a similarity falls between grid nodes, and far below (sigma << step)
    every kernel underflows to 0 on the nodes, so the SDC loss and its gradient are silently 0.
    """
    if sigma < grid_step:
        raise ConfigError(f"config keys 'icd.sigma' = {sigma!r} and 'icd.grid_step' = {grid_step!r}: the kernel "
                          "bandwidth must be at least one grid step (below it the similarity density is a comb of "
                          "grid nodes and SDC's loss and gradient vanish); raise icd.sigma or lower icd.grid_step")


def check_method_settings(fprs: Sequence[float], margin_min: float, margin_max: float) -> None:
    """ConfigError naming the key unless `ekd.fprs` is a non-empty list of rates in (0, 1] and
    `margindistillation.margin_min` <= `margindistillation.margin_max`."""
    if not fprs:
        raise ConfigError("config key 'ekd.fprs': expected at least one false-positive rate")
    for i, rate in enumerate(fprs):
        check_range(rate, Range(0, 1, lo_open=True), f"ekd.fprs[{i}]")
    if margin_min > margin_max:
        raise ConfigError(f"config keys 'margindistillation.margin_min' = {margin_min!r} and "
                          f"'margindistillation.margin_max' = {margin_max!r}: the minimum margin exceeds the maximum")
