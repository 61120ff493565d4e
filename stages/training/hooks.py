"""Hooks around `train_step`, in the manner of arcface_torch's `utils_callbacks.py`.

Each hook sees the run at its start, after every step and at its end: the NaN guard, per-step
metrics (`metrics.csv`, the log line with throughput and ETA, a bar on a terminal, TensorBoard when
installed), the learning watchdog (`stages.training.watchdog`), periodic verification on `eval.pairs`,
and checkpoints. They run in that order after each step.

No hook waits for the device on an ordinary step: the NaN guard and the metrics keep each step's
numbers as device tensors and read them back together at a sync step (`sync_step`: every
`train.log_every` steps, every checkpoint or verification step, and the last), one transfer for the
whole window. So a non-finite loss stops the run at the first sync step after it, naming the step
it happened at, before that window's metrics are written or anything is saved (a checkpoint also
refuses non-finite weights on its own).
"""
from __future__ import annotations

import csv
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from checkpoints import checkpoint_path, nonfinite_entries, prune_checkpoints, save_checkpoint
from common.atomic import atomic_path
from common.errors import PipelineError
from common.progress import on_terminal
from config import PipelineConfig
from evaluation.pairs import PairSet, load_pair_set
from evaluation.verify import evaluate_sets
from models import TorchEmbedder
from stages.training.hook import Hook, log_step, sync_step
from stages.training.run import run_state
from stages.training.shards import sharded_head
from stages.training.state import Run
from stages.training.step import StepOutput
from stages.training.tensorboard import Scalars
from stages.training.watchdog import LearningWatchdog

log = logging.getLogger(__name__)

KEEP_CHECKPOINTS = 2


class NanGuard(Hook):
    """Exit status 1 at the first sync step after a non-finite loss, naming its step, its terms and the last
    good checkpoint."""

    def __init__(self) -> None:
        self.window: list[tuple[int, torch.Tensor]] = []
        self.names: list[str] = []

    def after_step(self, run: Run, out: StepOutput) -> None:
        self.names = list(out.terms)
        self.window.append((run.step, torch.stack([out.loss, *out.terms.values()]).detach().float()))
        if not sync_step(run):
            return
        steps = [s for s, _ in self.window]
        finite = torch.isfinite(torch.stack([v for _, v in self.window])).cpu().numpy()
        self.window = []
        if finite.all():
            return
        first = int(np.argmin(finite.all(axis=1)))
        bad = [k for k, ok in zip(self.names, finite[first, 1:], strict=True) if not ok] or ["loss"]
        raise PipelineError(f"non-finite loss at step {steps[first]}: term(s) {', '.join(bad)}; "
                            f"last good checkpoint: {run.last_checkpoint or 'none'}")


class MetricsCSV:
    """Per-step metrics appended to `<run.dir>/metrics.csv`; resuming keeps the rows up to the resumed step."""

    def __init__(self, path: Path, columns: list[str], resume_step: int | None) -> None:
        self.path = path
        self.columns = columns
        kept = self.rows_up_to(path, columns, resume_step) if resume_step is not None and path.exists() else []
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, columns, extrasaction="ignore")
            w.writeheader()
            w.writerows(kept)
        self.fh = open(path, "a", newline="")
        self.writer = csv.DictWriter(self.fh, columns, extrasaction="ignore")

    @staticmethod
    def rows_up_to(path: Path, columns: list[str], step: int) -> list[dict[str, str]]:
        """The complete rows of steps 1..`step` in increasing order; a torn or foreign row ends the list."""
        kept: list[dict[str, str]] = []
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                if any(row.get(c) is None for c in columns) or None in row or not row["step"].isdigit():
                    break
                if int(row["step"]) > step or int(row["step"]) != len(kept) + 1:
                    break
                kept.append(row)
        return kept

    def append(self, rows: list[dict[str, float]]) -> None:
        self.writer.writerows(rows)
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


class MetricsLogger(Hook):
    """One `metrics.csv` row per step (columns: step, loss, the method's terms as `run.weights` names them, lr,
    throughput and distill's batch statistics), each also a TensorBoard scalar (`stages.training.tensorboard`);
    every `train.log_every` steps a log line with the throughput.

    The steps' tensors are kept until the next sync step (`sync_step`) and become Python numbers there, in
    one transfer for the window; its rows are then written.
    """

    def __init__(self, scalars: Scalars) -> None:
        self.csv: MetricsCSV | None = None
        self.tb = scalars
        self.window_t = 0.0
        self.window_n = 0
        self.pending: list[tuple[int, float, list[str], torch.Tensor]] = []
        self.bar: Any = None

    def on_start(self, run: Run) -> None:
        columns = ["step", "loss", *run.weights, "lr", "images_per_s", "ts_cos", "intra_teacher", "intra_student"]
        resume_step = run.step if run.resumed_from is not None else None
        self.csv = MetricsCSV(run.run_dir / "metrics.csv", columns, resume_step)
        self.tb.open(run.run_dir, run.cfg.train.tensorboard, resume_step)
        self.window_t, self.window_n = time.perf_counter(), 0
        if on_terminal():  # a bar on a terminal; log files get the step lines alone
            self.bar = tqdm(total=run.total, initial=run.step, desc=run.command, unit="step", dynamic_ncols=True)

    def after_step(self, run: Run, out: StepOutput) -> None:
        assert self.csv is not None
        names = ["loss", *out.terms, *out.stats]
        values = torch.stack([out.loss, *out.terms.values(), *out.stats.values()]).detach().float()
        self.pending.append((run.step, float(run.scheduler.get_last_lr()[0]), names, values))
        self.window_n += out.images
        if self.bar is not None:
            self.bar.update(1)
        if not sync_step(run):
            return
        flat = torch.cat([v for *_, v in self.pending]).cpu().tolist()
        rows: list[dict[str, float]] = []
        at = 0
        for step, lr, names, values in self.pending:
            rows.append({"step": step, **dict(zip(names, flat[at:at + len(values)], strict=True)), "lr": lr})
            at += len(values)
        self.pending = []
        if log_step(run):
            self._log(run, rows[-1], list(out.terms))
        self.csv.append(rows)
        for row in rows:
            self.tb.add_row(row)
        if self.bar is not None:
            last = rows[-1]
            self.bar.set_postfix_str(" ".join(f"{k} {last[k]:.4f}" for k in ("loss", "ts_cos") if k in last))

    def _log(self, run: Run, row: dict[str, float], terms: list[str]) -> None:
        now = time.perf_counter()
        ips = self.window_n / max(now - self.window_t, 1e-9)
        row["images_per_s"] = ips
        eta = (run.total - run.step) * run.cfg.train.batch_size * run.batches_per_step / max(ips, 1e-9)
        stats = {k: row[k] for k in ("ts_cos", "intra_teacher", "intra_student") if k in row}
        log.info("step %d/%d loss %.4f %s lr %.4g %.1f img/s%s eta %s", run.step, run.total, row["loss"],
                  " ".join(f"{k} {row[k]:.4f}" for k in terms), row["lr"], ips,
                 "".join(f" {k} {v:.3f}" for k, v in stats.items()), time.strftime("%H:%M:%S", time.gmtime(eta)))
        self.window_t, self.window_n = now, 0

    def on_end(self, run: Run) -> None:
        if self.csv is not None:
            self.csv.close()
        if self.bar is not None:
            self.bar.close()
        self.tb.close()


class VerificationHook(Hook):
    """Every `train.eval_every` steps (and at the last), verification accuracy of the student on `eval.pairs`,
    logged and appended to `<run.dir>/verification.csv`. Pair images are decoded once."""

    def __init__(self, cfg: PipelineConfig, scalars: Scalars) -> None:
        self.sets: list[tuple[PairSet, np.ndarray]] = []
        self.tb = scalars
        for pairs_file in cfg.eval.pairs:
            pair_set = load_pair_set(pairs_file, cfg.eval.root or None)
            self.sets.append((pair_set, pair_set.decode(cfg.data.image_size)))

    def on_start(self, run: Run) -> None:
        """A fresh run starts the file again; a resumed one keeps the rows up to its step."""
        self.tb.open(run.run_dir, run.cfg.train.tensorboard, run.step if run.resumed_from is not None else None)
        path = run.run_dir / "verification.csv"
        if not path.exists():
            return
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
        kept = rows[:1] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= run.step]
        if run.resumed_from is None or len(kept) < 2:
            path.unlink()
            return
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
            csv.writer(fh).writerows(kept)

    def after_step(self, run: Run, out: StepOutput) -> None:
        every = run.cfg.train.eval_every
        if not (every and (run.step % every == 0 or run.step == run.total)):
            return
        accuracies = self.accuracies(run)
        log.info("step %d verification: %s", run.step, " ".join(f"{k} {v:.4f}" for k, v in accuracies.items()))
        path = run.run_dir / "verification.csv"
        new = not path.exists()
        with open(path, "a", newline="") as fh:
            w = csv.writer(fh)
            if new:
                w.writerow(["step", *accuracies])
            w.writerow([run.step, *accuracies.values()])
        for name, accuracy in accuracies.items():
            self.tb.add(f"verification/{name}", accuracy, run.step)
        self.tb.flush()

    def accuracies(self, run: Run) -> dict[str, float]:
        """Mean 10-fold accuracy per set of the student as it is now (left in train mode afterwards)."""
        embedder = TorchEmbedder(run.student, arch=run.cfg.student.arch, weights_sha256="",
                                 input_size=run.cfg.data.image_size, device=run.device)
        images = {id(s): im for s, im in self.sets}
        results = evaluate_sets([s for s, _ in self.sets],
                                lambda s: embedder.embed_fused(images[id(s)], run.cfg.eval.batch_size),
                                nfolds=run.cfg.eval.nfolds, distributions=False)
        run.student.train()
        return {name: float(r.record["accuracy_mean"]) for name, r in results.items()}


class CheckpointHook(Hook):
    """A checkpoint every `train.checkpoint_every` steps (the last two kept) and a final one with `backbone.pth`.

    `write=False` (ranks other than 0 under torchrun): only the collective part of a checkpoint, gathering
    this rank's rows of a margin head split over the ranks (`stages.training.shards`); nothing is written."""

    def __init__(self, write: bool = True) -> None:
        self.start = 0.0
        self.write = write

    def on_start(self, run: Run) -> None:
        self.start = time.perf_counter()

    def images_per_s(self, run: Run) -> float:
        if not run.images_seen:
            return run.previous_images_per_s
        return run.images_seen / max(time.perf_counter() - self.start, 1e-9)

    def save(self, run: Run, final: bool = False) -> Path:
        """Write the run's state, unless a weight or optimiser value is non-finite (then exit status 1)."""
        path = checkpoint_path(run.run_dir / "checkpoints", run.step)
        if not self.write:
            if sharded_head(run) is not None:
                run_state(run, self.images_per_s(run), final)  # this rank's part of the gathered class matrix
            return path
        state = run_state(run, self.images_per_s(run), final)
        bad = nonfinite_entries(state)
        if bad:
            raise PipelineError(f"non-finite values after step {run.step} in {', '.join(bad[:3])}"
                                f"{f' and {len(bad) - 3} more' if len(bad) > 3 else ''}; checkpoint not written; "
                                f"last good checkpoint: {run.last_checkpoint or 'none'}")
        save_checkpoint(path, state)
        prune_checkpoints(path.parent, keep=KEEP_CHECKPOINTS)
        run.last_checkpoint = path
        return path

    def after_step(self, run: Run, out: StepOutput) -> None:
        if run.step % run.cfg.train.checkpoint_every == 0 and run.step < run.total:
            self.save(run)

    def on_end(self, run: Run) -> None:
        backbone = run.run_dir / "backbone.pth"
        if run.resumed_from is not None and run.images_seen == 0 and backbone.exists():
            return  # a finished run stays as it is
        self.save(run, final=True)
        if self.write:
            save_checkpoint(backbone, run.student.state_dict())


def default_hooks(cfg: PipelineConfig, main: bool = True) -> list[Hook]:
    """The hooks of `train` and `distill`, in the order they run. Under torchrun only rank 0 (`main`) logs,
    verifies and writes checkpoints; every rank keeps its NaN guard."""
    if not main:
        return [NanGuard(), CheckpointHook(write=False)]
    scalars = Scalars()  # TensorBoard: one writer for the metrics and the verification
    hooks: list[Hook] = [NanGuard(), MetricsLogger(scalars), LearningWatchdog()]
    if cfg.eval.pairs and cfg.train.eval_every:
        hooks.append(VerificationHook(cfg, scalars))
    hooks.append(CheckpointHook())
    return hooks
