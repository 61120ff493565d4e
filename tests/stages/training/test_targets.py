"""The cache is exact: distilling from a float32 cache gives the losses of distilling from the live teacher."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from cache import TeacherCache
from config import load_config
from models import build_teacher
from readers import build_dataset
from stages.extract import run_extract
from stages.training.loop import run_loop
from stages.training.state import TrainInputs
from stages.training.targets import CacheTargets
from tests.conftest import tiny_settings
from tests.helpers.online_targets import OnlineTargets


def _losses(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as fh:
        return [{k: float(r[k]) for k in ("loss", "margin", "fcd", "sdc")} for r in csv.DictReader(fh)]


def test_cached_targets_equal_online_teacher(tmp_path: Path, teacher_weights: Path) -> None:
    settings = tiny_settings(tmp_path / "extract", teacher_weights) + ["train.steps=4", "train.checkpoint_every=100"]
    cfg = load_config(None, settings)
    run_extract(cfg)
    cache = TeacherCache(tmp_path / "extract" / "cache" / "teacher.h5", in_ram="always")
    dataset = build_dataset(cfg.data)
    fingerprint = {"teacher": cache.teacher_fingerprint, "dataset": cache.dataset_fingerprint}
    rows = np.arange(len(dataset))

    cached = load_config(None, settings + [f"run.dir={tmp_path / 'cached'}"])
    run_loop(cached, TrainInputs(dataset, rows, CacheTargets(cache), cache.positives, cache, fingerprint,
                                 cache.embedding_dim), command="distill")
    online = load_config(None, settings + [f"run.dir={tmp_path / 'online'}"])
    teacher = build_teacher(online.teacher, online.data.image_size, "cpu")
    run_loop(online, TrainInputs(dataset, rows, OnlineTargets(teacher, dataset), cache.positives, None, fingerprint,
                                 teacher.embedding_size), command="distill")

    a, b = _losses(tmp_path / "cached" / "metrics.csv"), _losses(tmp_path / "online" / "metrics.csv")
    assert len(a) == len(b) == 4
    assert any(r["sdc"] > 0 for r in a)
    for ra, rb in zip(a, b, strict=True):
        for key in ra:
            assert ra[key] == pytest.approx(rb[key], abs=1e-5), key
