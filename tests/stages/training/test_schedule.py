"""`stages.training.schedule`: warm-up, cosine, step and constant learning-rate schedules."""
from __future__ import annotations

import math

import pytest
import torch

from common.errors import ConfigError
from stages.training.schedule import lr_lambda


def test_cosine_schedule_with_warmup() -> None:
    kw = {"total_steps": 100, "warmup_steps": 10, "kind": "cosine"}
    assert lr_lambda(0, **kw) == pytest.approx(0.1)
    assert lr_lambda(4, **kw) == pytest.approx(0.5)
    assert lr_lambda(9, **kw) == pytest.approx(1.0)
    assert lr_lambda(10, **kw) == pytest.approx(1.0)
    assert lr_lambda(55, **kw) == pytest.approx(0.5)
    assert lr_lambda(100, **kw) == pytest.approx(0.0, abs=1e-12)
    assert lr_lambda(150, **kw) == pytest.approx(0.0, abs=1e-12)
    values = [lr_lambda(s, **kw) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))
    assert lr_lambda(0, total_steps=4, warmup_steps=0, kind="cosine") == 1.0
    assert lr_lambda(2, total_steps=4, warmup_steps=0, kind="cosine") == pytest.approx(0.5)


def test_step_and_constant_schedules() -> None:
    kw = {"total_steps": 100, "warmup_steps": 0, "kind": "step", "milestones": [0.6, 0.85], "gamma": 0.1}
    assert lr_lambda(0, **kw) == 1.0
    assert lr_lambda(59, **kw) == 1.0
    assert lr_lambda(60, **kw) == pytest.approx(0.1)
    assert lr_lambda(84, **kw) == pytest.approx(0.1)
    assert lr_lambda(85, **kw) == pytest.approx(0.01)
    assert lr_lambda(2, total_steps=100, warmup_steps=4, kind="step", milestones=[0.5]) == pytest.approx(0.75)
    assert lr_lambda(0, total_steps=10, warmup_steps=2, kind="constant") == pytest.approx(0.5)
    assert lr_lambda(7, total_steps=10, warmup_steps=2, kind="constant") == 1.0


def test_schedule_with_lambda_lr_and_errors() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_lambda(s, 20, 5, "cosine"))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2 / 5)
    for _ in range(5):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2)
    assert math.isclose(lr_lambda(20, 20, 5, "cosine"), 0.0, abs_tol=1e-12)
    with pytest.raises(ConfigError, match="train.schedule"):
        lr_lambda(0, 10, 0, "linear")
    with pytest.raises(ConfigError, match="train.milestones"):
        lr_lambda(5, 10, 0, "step", milestones=[1.5])
    with pytest.raises(ConfigError, match="train.steps"):
        lr_lambda(0, 0, 0, "cosine")
