"""The hook interface of the training loop (arcface_torch's callbacks) and when a step syncs with the device."""
from __future__ import annotations

from stages.training.state import Run
from stages.training.step import StepOutput


class Hook:
    """Does nothing; subclasses override what they need."""

    def on_start(self, run: Run) -> None:
        """Before the first step of this process."""

    def after_step(self, run: Run, out: StepOutput) -> None:
        """After `train_step` (run.step is the step just done)."""

    def on_end(self, run: Run) -> None:
        """After the last step (also when the run was already finished)."""


def log_step(run: Run) -> bool:
    """Whether the step gets a log line: the first (so a person sees the run move at once), every
    `train.log_every`-th, and the last."""
    return run.step == 1 or run.step % run.cfg.train.log_every == 0 or run.step == run.total


def sync_step(run: Run) -> bool:
    """Whether hooks read the device's numbers back after `run.step`: logging, checkpoint, verification or last step."""
    train = run.cfg.train
    return (log_step(run) or run.step % train.checkpoint_every == 0 or run.step >= run.total
            or bool(train.eval_every and run.step % train.eval_every == 0))
