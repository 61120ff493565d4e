"""`stages.training.watchdog`: a run that does not learn gets one warning naming the keys that fix it."""
from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from stages.training.step import StepOutput
from stages.training.watchdog import FIX_KEYS, MIN_STEPS, LearningWatchdog, learning_warnings


def test_a_student_that_learns_the_teacher_is_left_alone() -> None:
    ts = np.linspace(0.0, 0.45, 160)  # the LFW recipe: 0.30 by step 50
    margin = np.linspace(40.0, 20.0, 160)
    assert learning_warnings(ts, margin, 160) == []
    assert learning_warnings([0.6] * 40, [], 40) == []  # flat but already close to the teacher


def test_a_student_stuck_near_zero_is_named() -> None:
    (text,) = learning_warnings(0.011 + 0.005 * np.sin(np.arange(150)), [], 150)
    assert "not learning the teacher" in text and "ts_cos" in text and FIX_KEYS in text and "step 150" in text


def test_a_diverging_margin_loss_is_named() -> None:
    (text,) = learning_warnings([], np.linspace(40.0, 60.0, 100), 100)
    assert "margin loss is diverging" in text and "loss.margin_weight" in text
    assert learning_warnings([], [np.nan] * 40, 40) == []  # no finite values: the NaN guard's business
    assert learning_warnings([0.0] * 10, [50.0] * 10, 10) == []  # too few steps to tell


def _run(total: int) -> Any:
    train = SimpleNamespace(log_every=10, checkpoint_every=1000, eval_every=0, warmup_steps=0)
    return SimpleNamespace(step=0, total=total, cfg=SimpleNamespace(train=train), command="distill")


def _drive(hook: LearningWatchdog, run: Any, ts: float, margin: float) -> None:
    hook.on_start(run)
    for step in range(1, run.total + 1):
        run.step = step
        out = StepOutput(loss=torch.tensor(margin), terms={"margin": torch.tensor(margin)},
                         stats={"ts_cos": torch.tensor(ts)}, images=64)
        hook.after_step(run, out)


def test_the_check_waits_for_the_warm_up() -> None:
    from stages.training.watchdog import check_step

    assert check_step(1000, 0) == 200 and check_step(94, 50) == 70 and check_step(60, 0) == 20


def test_the_hook_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        _drive(LearningWatchdog(), _run(200), ts=0.01, margin=50.0)
    assert len([r for r in caplog.records if "not learning the teacher" in r.getMessage()]) == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        _drive(LearningWatchdog(), _run(MIN_STEPS - 1), ts=0.01, margin=50.0)  # too short to judge
    assert not caplog.records
