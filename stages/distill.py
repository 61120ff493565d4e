"""`python cli.py distill`: ICD-Face training of the student against the stage-one cache.

The teacher network is never imported or built here: targets, teacher positives and teacher
similarities all come from the cache, which must match this run's data, preprocessing and dimension.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from cache import TeacherCache, cache_file
from common.errors import ConfigError
from config import PipelineConfig
from readers import build_dataset
from stages.training.loop import run_loop
from stages.training.policy import positive_table
from stages.training.run import TrainInputs
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
    inputs = TrainInputs(dataset=dataset, rows=rows, provider=CacheTargets(cache),
                         positives=positive_table(cfg.train.positive_policy, cache),
                         cache=cache, cache_fingerprint={"teacher": cache.teacher_fingerprint,
                                                         "dataset": cache.dataset_fingerprint},
                         teacher_dim=cache.embedding_dim)
    return run_loop(cfg, inputs, command="distill", resume=resume, overwrite=overwrite)
