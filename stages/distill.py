"""`python cli.py distill`: ICD-Face training of the student against the stage-one cache.

The teacher network is never imported or built here: targets, teacher positives and teacher
similarities all come from the cache, which must match this run's data, preprocessing and dimension.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cache import TeacherCache, cache_file
from common.distributed import env_rank
from common.errors import ConfigError
from config import PipelineConfig, derive, value_at
from config.auto import (
    AUTO,
    FEW_IMAGES_FIX,
    MANY_IMAGES_PER_IDENTITY,
    auto_recipe,
    few_images,
    median_images_per_identity,
)
from evaluation.compactness import intra_class_similarities
from evaluation.train_compactness import training_compactness
from models import build_student
from models.device import resolve_device
from models.loading import load_backbone_weights
from models.preprocess import student_input
from readers import build_dataset
from readers.face_size import warn_face_size
from stages.training.loop import run_loop
from stages.training.policy import positive_table
from stages.training.state import TrainInputs
from stages.training.targets import CacheTargets

log = logging.getLogger(__name__)


def expected_preprocessing(cfg: PipelineConfig) -> dict[str, Any]:
    """The teacher input preprocessing this config describes, in the cache's fingerprint form."""
    t = cfg.teacher
    return {
        "input_size": t.input_size or cfg.data.image_size,
        "layout": t.input_layout,
        "color": t.color,
        "mean": [float(v) for v in t.mean],
        "std": [float(v) for v in t.std],
    }


def check_cache(cache: TeacherCache, cfg: PipelineConfig, dataset_info: dict[str, Any]) -> None:
    """Refuse a cache built from other data, other preprocessing or another embedding size (exit 2)."""
    problems = []
    cached_data = cache.dataset_fingerprint
    keys = ["format", "listing_sha256", "rows", "classes", "image_size"]
    if dataset_info.get("format") == "synthetic":
        keys.append("root")  # the generator and its seed: the synthetic listing's content
    for key in keys:
        if cached_data.get(key) != dataset_info.get(key):
            problems.append(f"dataset {key}: cache {cached_data.get(key)!r} != data {dataset_info.get(key)!r}")
    teacher = cache.teacher_fingerprint
    pre = teacher.get("preprocessing", {})
    want = expected_preprocessing(cfg)
    have = {"input_size": teacher.get("input_size"), **{k: pre.get(k) for k in ("layout", "color", "mean", "std")}}
    if cfg.teacher.arch == "onnx" and not cfg.teacher.input_size:
        want.pop("input_size")  # an ONNX model with a fixed input side chose it itself
    for key, value in want.items():
        if have.get(key) != value:
            problems.append(f"teacher preprocessing {key}: cache {have.get(key)!r} != config {value!r}")
    if cache.embedding_dim != cfg.teacher.embedding_size:
        problems.append(f"embedding_dim: cache {cache.embedding_dim} "
                        f"!= teacher.embedding_size {cfg.teacher.embedding_size}")
    if problems:
        raise ConfigError(f"cache '{cache.path}' does not match this run: " + "; ".join(problems))


# the methods whose student collapses on few images per identity: a learnable margin head, or teacher centres
CENTRE_METHODS = ("adadistill", "margindistillation")


def teacher_intra(cache: TeacherCache, rows: np.ndarray, per_identity: int = 8, identities: int = 500,
                  seed: int = 0) -> float:
    """The cached teacher's mean same-identity cosine on training images: up to `per_identity` rows of each of
    up to `identities` identities with two or more of `rows` (seeded); NaN when none has two."""
    labels = cache.labels[rows]
    ids, counts = np.unique(labels, return_counts=True)
    ids = ids[counts >= 2]
    if not len(ids):
        return float("nan")
    rng = np.random.default_rng(seed)
    keep = np.isin(labels, rng.permutation(ids)[:identities])  # one pass over the rows (millions at MS1MV2 scale)
    order = rng.permutation(int(keep.sum()))
    sub_rows, sub_labels = rows[keep][order], labels[keep][order]
    by_label = np.argsort(sub_labels, kind="stable")
    grouped = sub_labels[by_label]
    starts = np.searchsorted(grouped, grouped, side="left")
    chosen = np.sort(sub_rows[by_label][np.arange(len(grouped)) - starts < per_identity])
    emb = cache.targets(chosen, np.zeros_like(chosen))
    return float(intra_class_similarities(emb, cache.labels[chosen]).mean())


def resolve_method(cfg: PipelineConfig, labels: np.ndarray, intra: Callable[[], float]) -> PipelineConfig:
    """`cfg` with `loss.method = "auto"` replaced by its concrete recipe (`config.auto`; `intra()` gives the
    teacher's same-identity cosine on training images), logged; with a method chosen by hand, a warning where
    the training set has too few images per identity for its margin softmax."""
    median = median_images_per_identity(labels)
    if cfg.loss.method == AUTO:
        default = PipelineConfig()
        keys = ("loss.method", "loss.margin_weight", "loss.fcd_weight")
        t_intra = intra() if median >= MANY_IMAGES_PER_IDENTITY else float("nan")
        changes = auto_recipe(median, t_intra, {k: value_at(cfg, k) for k in keys},
                              {k: value_at(default, k) for k in keys})
        teacher = "" if np.isnan(t_intra) else f" and the teacher's mean same-identity cosine on them is {t_intra:.2f}"
        log.info("loss.method = auto: the training identities have a median of %g images%s, so %s "
                 "(saved in the run's config.toml)", median, teacher,
                 ", ".join(f"{k} = {v!r}" for k, v in changes.items()))
        return derive(cfg, changes)
    if few_images(median):
        loss = cfg.loss
        if loss.method in CENTRE_METHODS:
            log.warning("loss.method = %r learns a margin softmax over teacher class centres, but the training "
                        "identities have a median of %g images: on such data these students collapse (held-out AUC "
                        "near 0.5, docs/training.md, \"Defaults\"); use loss.method=auto, or rkd with %s",
                        loss.method, median, FEW_IMAGES_FIX)
        elif loss.margin_weight > 0:
            log.warning("loss.margin_weight = %g trains a margin head over %d identities with a median of %g images: "
                        "on such data it swamps the teacher's signal and the student stays near chance "
                        "(docs/training.md, \"Defaults\"); set %s", loss.margin_weight, len(np.unique(labels)), median,
                        FEW_IMAGES_FIX)
    return cfg


def run_distill(cfg: PipelineConfig, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    path = cache_file(cfg.cache.path, cfg.run.dir)
    dataset = build_dataset(cfg.data)
    if len(dataset) == 0:
        raise ConfigError(f"data set '{cfg.data.root or cfg.data.format}' (data.root) holds no images")
    cache = TeacherCache(path, in_ram=cfg.cache.in_ram, ram_limit_gb=cfg.cache.ram_limit_gb)
    info = dict(dataset.describe(), image_size=cfg.data.image_size)
    check_cache(cache, cfg, info)
    rows = np.flatnonzero(cache.done).astype(np.int64)
    if len(rows) < len(dataset):
        log.warning("distill: %d rows were skipped at extraction and are left out", len(dataset) - len(rows))
    warn_face_size(dataset, cfg.data.image_size)
    cfg = resolve_method(cfg, np.asarray(dataset.labels, dtype=np.int64)[rows], lambda: teacher_intra(cache, rows))
    inputs = TrainInputs(dataset=dataset, rows=rows, provider=CacheTargets(cache),
                         positives=positive_table(cfg.train.positive_policy, cache),
                         cache=cache, cache_fingerprint={"teacher": cache.teacher_fingerprint,
                                                         "dataset": cache.dataset_fingerprint},
                         teacher_dim=cache.embedding_dim)
    summary = run_loop(cfg, inputs, command="distill", resume=resume, overwrite=overwrite)
    if env_rank() == 0:
        summary["train_compactness"] = training_gap(cfg, Path(summary["backbone"]))
    return summary


class _Student:
    """The trained student as `training_compactness` needs it (no `models.Embedder`: distill builds none)."""

    def __init__(self, module: torch.nn.Module, device: torch.device) -> None:
        self.module, self.device = module.eval().to(device), device

    def embed(self, images: np.ndarray) -> torch.Tensor:
        with torch.inference_mode():
            return self.module(student_input(torch.as_tensor(images).to(self.device))).float().cpu()


def training_gap(cfg: PipelineConfig, backbone: Path) -> dict[str, Any] | None:
    """The trained student's and the cached teacher's mean same-identity cosine on training identities
    (`evaluation.train_compactness`, as `evaluate` reports it) and their gap (teacher minus student), logged
    with what it says about ICD-Face's premise (a student less compact than its teacher); None without an
    identity of two images."""
    student = build_student(cfg.student, cfg.data.image_size)
    load_backbone_weights(student, backbone)
    record = training_compactness(cfg, _Student(student, resolve_device(cfg.run.device)), Path(cfg.run.dir), "student")
    gap = record["gap"]["intra_mean"] if record else None
    if record is None or gap is None:
        return None
    teacher, student_mean = record["teacher"]["intra"]["mean"], record["student"]["intra"]["mean"]
    verdict = ("the student is less compact than its teacher: ICD-Face's premise holds here, SDC has a gap to close"
               if gap > 0.02 else
               "the student is as compact as its teacher or more: ICD-Face's premise does not hold here, and SDC "
               "(loss.method = icd) has little to close; FCD-led methods fit such data "
               "(docs/results.md, \"Which method\")")
    log.info("distill: same-identity cosine on %d training images: teacher %.4f, student %.4f, gap %+.4f (teacher "
             "minus student): %s", record["rows"], teacher, student_mean, gap, verdict)
    return {"rows": record["rows"], "teacher_intra_mean": teacher, "student_intra_mean": student_mean,
            "intra_gap": gap, "plot": record["plot"]}
