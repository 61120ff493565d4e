"""`python cli.py train`: the stage-two loop with the margin loss only, on the model `[student]` describes.

Used to train the demo's teacher (its `backbone.pth` then serves as `teacher.weights`) and the
no-distillation student baseline.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from common.errors import ConfigError
from config import PipelineConfig
from readers import build_dataset
from readers.face_size import warn_face_size
from stages.training.loop import run_loop
from stages.training.state import TrainInputs


def run_train(cfg: PipelineConfig, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    dataset = build_dataset(cfg.data)
    if len(dataset) == 0:
        raise ConfigError(f"data set '{cfg.data.root or cfg.data.format}' (data.root) holds no images")
    warn_face_size(dataset, cfg.data.image_size)
    inputs = TrainInputs(dataset=dataset, rows=np.arange(len(dataset), dtype=np.int64))
    return run_loop(cfg, inputs, command="train", resume=resume, overwrite=overwrite)
