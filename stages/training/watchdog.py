"""The learning watchdog: a warning, once, when a run is not learning, with the keys that fix it.

Two signs, read once after `CHECK_SHARE` of the steps and the LR warm-up (runs of at least `MIN_STEPS`
steps):
- distill's student is not learning the teacher: its mean cosine to the teacher's embedding on the batches
  (`ts_cos`) has risen by less than `MIN_TS_COS_RISE` since the first steps and is still below
  `LEARNED_TS_COS`. Measured on LFW DevTrain (a margin head over 3,634 identities of one or two images):
  `ts_cos` 0.011 after 150 steps, held-out AUC 0.498; the working recipe reached 0.30 by step 50.
- the margin loss is diverging: its mean over the latest steps is above `MARGIN_RISE` times its mean over
  the first steps (a healthy ArcFace loss falls from the start).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from stages.training.hook import Hook, sync_step
from stages.training.state import Run
from stages.training.step import StepOutput

log = logging.getLogger(__name__)

CHECK_SHARE = 0.2  # the check runs at the first sync step after this share of the steps
MIN_STEPS = 50  # shorter runs are not checked (too few steps to tell)
WINDOW = 10  # steps averaged at the start and at the check
MIN_TS_COS_RISE = 0.1
LEARNED_TS_COS = 0.5
MARGIN_RISE = 1.1
FIX_KEYS = "loss.margin_weight (0: no margin head), loss.fcd_weight (e.g. 10), train.lr (e.g. halve it)"


def check_step(total: int, warmup_steps: int) -> float:
    """The step from which the check runs: `CHECK_SHARE` of the run, after the LR warm-up and two windows."""
    return max(CHECK_SHARE * total, warmup_steps + 2 * WINDOW)


def learning_warnings(ts_cos: Sequence[float], margin: Sequence[float], step: int) -> list[str]:
    """The warnings for a run's per-step `ts_cos` and margin-loss values from step 1 to `step` (either may be
    empty: a `train` run has no `ts_cos`, a run without the margin head no margin term); [] when healthy."""
    out: list[str] = []
    ts = np.asarray(ts_cos, dtype=np.float64)
    ts = ts[np.isfinite(ts)]  # a non-finite step is the NaN guard's business
    if len(ts) >= 2 * WINDOW:
        start, now = float(ts[:WINDOW].mean()), float(ts[-WINDOW:].mean())
        if now - start < MIN_TS_COS_RISE and now < LEARNED_TS_COS:
            out.append(f"the student is not learning the teacher: its cosine to the teacher's embedding (ts_cos) "
                       f"is {now:.3f} at step {step}, {start:.3f} at the start; a margin head over identities with few "
                       f"images, or too high a learning rate, drowns the teacher's signal. Set {FIX_KEYS}; the "
                       f"recipe that learned on real faces at every count measured is loss.method=\"fcd\" "
                       f"loss.margin_weight=0 loss.fcd_weight=10 (docs/training.md, \"Defaults\")")
    m = np.asarray(margin, dtype=np.float64)
    m = m[np.isfinite(m)]
    if len(m) >= 2 * WINDOW:
        start, now = float(m[:WINDOW].mean()), float(m[-WINDOW:].mean())
        if not now <= MARGIN_RISE * start:
            out.append(f"the margin loss is diverging: {now:.2f} at step {step} against {start:.2f} at the start. "
                       f"Set {FIX_KEYS}")
    return out


class LearningWatchdog(Hook):
    """Keeps each step's `ts_cos` and margin term (device tensors, read back at sync steps) and logs
    `learning_warnings` once, at the first sync step after `CHECK_SHARE` of the run's steps."""

    def __init__(self) -> None:
        self.pending: list[torch.Tensor] = []
        self.ts_cos: list[float] = []
        self.margin: list[float] = []
        self.done = False

    def on_start(self, run: Run) -> None:
        self.done = run.total < MIN_STEPS or run.step > 0  # a resumed run was checked before (or is past it)

    def after_step(self, run: Run, out: StepOutput) -> None:
        if self.done:
            return
        nan = torch.tensor(float("nan"), device=out.loss.device)
        self.pending.append(torch.stack([out.stats.get("ts_cos", nan).detach().float(),
                                         out.terms.get("margin", nan).detach().float()]))
        if not sync_step(run):
            return
        values = torch.stack(self.pending).cpu().numpy()
        self.pending = []
        self.ts_cos += values[:, 0].tolist()  # NaN where the step has no such value
        self.margin += values[:, 1].tolist()
        if run.step < check_step(run.total, run.cfg.train.warmup_steps):
            return
        self.done = True
        for warning in learning_warnings(self.ts_cos, self.margin, run.step):
            log.warning("%s %s", run.command, warning)
