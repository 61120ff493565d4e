"""The records of one training run: `TrainInputs` (what a run is given) and `Run` (what it holds and where it is).

`build_run` (`stages.training.run`) makes a `Run`; `train_step`, the loss methods and the hooks read and advance it.
They live apart from `build_run` so that the modules `build_run` wires (`methods`, `shards`, ...) can name them
without importing it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from common.distributed import Dist
from config import PipelineConfig
from stages.training.bank import FeatureBank
from stages.training.sampler import IdentityBatchSampler
from stages.training.targets import TargetProvider


@dataclass
class TrainInputs:
    """What a run needs besides the config: the data, and for `distill` the targets and positives."""

    dataset: Any
    rows: np.ndarray  # usable dataset rows (all rows, or the cache's done rows)
    provider: TargetProvider | None = None
    positives: np.ndarray | None = None  # [N, K] teacher positives (dataset rows, -1 pads)
    cache: Any | None = None  # read inside the workers for batch targets
    cache_fingerprint: dict[str, Any] = field(default_factory=dict)
    teacher_dim: int = 0


@dataclass
class Run:
    """The state of one training run; `train_step` advances it, hooks observe it."""

    cfg: PipelineConfig
    command: str
    inputs: TrainInputs
    device: torch.device
    modules: dict[str, nn.Module]  # "student", "head" (methods with a margin head), "projector" (dimensions differ)
    bank: FeatureBank | None
    grid: torch.Tensor | None  # the SDC kernel-density grid (methods with SDC: `methods.SDC_METHODS`)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    autocast_dtype: torch.dtype | None
    weights: dict[str, float]  # loss term -> weight, every term the steps compute (`methods.method_weights`)
    sampler: IdentityBatchSampler
    total: int  # optimiser steps of the whole run
    sdc_start: int  # first step with the SDC term
    num_classes: int
    identities_per_batch: int
    step: int = 0
    epoch: int = 0
    position: int = 0  # batches of `epoch` done
    resumed_from: Path | None = None
    last_checkpoint: Path | None = None
    images_seen: int = 0  # images trained on in this process
    previous_images_per_s: float = 0.0  # throughput stored in the checkpoint resumed from
    method_state: dict[str, torch.Tensor] = field(default_factory=dict)  # evolving method state (checkpointed)
    teacher_centres: torch.Tensor | None = None  # [C, D_t] MarginDistillation's frozen centres (run dir file)
    dist: Dist = field(default_factory=Dist)  # this process's rank in a torchrun launch (a world of one without)
    nets: dict[str, nn.Module] = field(default_factory=dict)  # `modules` as the step calls them (DDP under torchrun)
    micro: int = 0  # batches of the current optimiser step done (train.grad_accum > 1)
    partial: list[Any] = field(default_factory=list)  # their StepOutputs, averaged when the step completes

    @property
    def distill(self) -> bool:
        return self.inputs.provider is not None

    @property
    def batches_per_step(self) -> int:
        """Plan batches one optimiser step consumes: `train.grad_accum` on each rank."""
        return self.dist.world * self.cfg.train.grad_accum

    @property
    def per_epoch(self) -> int:
        """Optimiser steps per epoch: every rank trains on `train.grad_accum` batches of the plan each step."""
        return math.ceil(len(self.sampler) / self.batches_per_step)

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.run.dir)

    @property
    def student(self) -> nn.Module:
        return self.modules["student"]

    @property
    def projector(self) -> nn.Module | None:
        return self.modules.get("projector")

    def parameters(self) -> list[nn.Parameter]:
        return [q for mod in self.modules.values() for q in mod.parameters()]
