"""Run-time helpers shared by the stages: device choice, seeding, run-directory paths."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from config import ConfigError, PipelineConfig


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present; an explicit CUDA device that is absent is a config error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"config key 'run.device': {name!r} is not a device (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"config key 'run.device': {name!r} requested but CUDA is not available")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def cache_path(cfg: PipelineConfig) -> Path:
    """`cache.path`, or `<run.dir>/cache/teacher.h5` when unset."""
    return Path(cfg.cache.path) if cfg.cache.path else Path(cfg.run.dir) / "cache" / "teacher.h5"


def index_path(cache_file: Path) -> Path:
    """The FAISS index lives beside the cache: `teacher.h5` -> `teacher.faiss`."""
    return cache_file.with_suffix(".faiss")


def quality_path(cache_file: Path) -> Path:
    return cache_file.with_name(cache_file.stem + "_quality.json")
