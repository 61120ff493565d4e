"""Learning-rate multiplier per optimiser step, for `torch.optim.lr_scheduler.LambdaLR`."""
from __future__ import annotations

import math
from collections.abc import Sequence

from common.errors import ConfigError
from config.choices import SCHEDULES, check_choice


def lr_lambda(
    step: int,
    total_steps: int,
    warmup_steps: int = 0,
    kind: str = "cosine",
    milestones: Sequence[float] = (),
    gamma: float = 0.1,
) -> float:
    """Multiplier of the base learning rate at optimiser step `step` (0-based).

    Warm-up: (step + 1) / warmup_steps for step < warmup_steps, rising linearly to 1.
    cosine: 0.5 * (1 + cos(pi * t)) with t = (step - warmup) / (total - warmup), 1 after warm-up
    and 0 at `total_steps` (and beyond). step: gamma ** (number of milestones m with step >=
    m * total_steps), milestones being fractions of `total_steps`, times the warm-up factor.
    constant: 1 after warm-up.
    """
    check_choice(kind, SCHEDULES, "train.schedule")
    if total_steps < 1:
        raise ConfigError(f"train.steps must be >= 1, got {total_steps}")
    if warmup_steps < 0:
        raise ConfigError(f"train.warmup_steps must be >= 0, got {warmup_steps}")
    if kind == "step" and any(not 0.0 < m <= 1.0 for m in milestones):
        raise ConfigError(f"train.milestones must be fractions in (0, 1], got {list(milestones)}")
    warm = (step + 1) / warmup_steps if step < warmup_steps else 1.0
    if kind == "constant":
        return warm
    if kind == "step":
        return warm * gamma ** sum(1 for m in milestones if step >= m * total_steps)
    if step < warmup_steps:
        return warm
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))
