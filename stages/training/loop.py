"""The stage-two training loop shared by `train` (margin loss only) and `distill` (ICD-Face).

`run_loop` = `build_run` + `train_step` over the epoch plans + hooks, like arcface_torch's
`train_v2.py`. Resumes exactly: the checkpoint holds the whole `Run` state; data order and flip bits
are functions of (seed, epoch, position), and the DataLoader draws its worker seeds from its own
generator seeded by epoch, so a stopped and resumed CPU run repeats the uninterrupted one's losses
step for step.
"""
from __future__ import annotations

import resource
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader

from config import PipelineConfig, save_resolved
from stages.training.batches import EpochPlan, TrainBatches, rank_positions
from stages.training.hooks import Hook, default_hooks
from stages.training.run import build_run
from stages.training.state import Run, TrainInputs
from stages.training.step import StepOutput, train_step


def epoch_loader(run: Run) -> DataLoader[dict[str, torch.Tensor]]:
    """This rank's batches of `run.epoch` from plan position `run.position` on (`rank_positions`), decoded in
    `data.workers` worker processes."""
    cfg = run.cfg
    rows = run.inputs.rows
    batches = [rows[b] for b in run.sampler.epoch_plan(run.epoch)]
    plan = EpochPlan(batches, cfg.run.seed, run.epoch,
                     rank_positions(len(batches), run.position, run.dist.world, run.dist.rank))
    generator = torch.Generator()
    generator.manual_seed(cfg.run.seed * 1000003 + run.epoch)
    return DataLoader(TrainBatches(run.inputs.dataset, run.inputs.cache), sampler=plan, batch_size=None,
                      num_workers=cfg.data.workers, generator=generator, pin_memory=run.device.type == "cuda",
                      prefetch_factor=4 if cfg.data.workers else None)


def batches(run: Run) -> Iterator[dict[str, torch.Tensor]]:
    """Batches until `run.total` steps, epoch after epoch (`train_step` moves `run` to the next epoch)."""
    while run.step < run.total:
        epoch = run.epoch
        for batch in epoch_loader(run):
            yield batch
            if run.step >= run.total:
                return
        if run.epoch == epoch:  # nothing was left of this epoch
            run.epoch, run.position = epoch + 1, 0


def run_loop(cfg: PipelineConfig, inputs: TrainInputs, command: str, resume: bool = False,
             hooks: Sequence[Hook] | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Train for `train.steps` (or `train.epochs`) and return the JSON summary."""
    run = build_run(cfg, inputs, command, resume, overwrite)
    run.run_dir.mkdir(parents=True, exist_ok=True)
    if run.dist.main:
        save_resolved(cfg, run.run_dir)
    hooks = default_hooks(cfg, run.dist.main) if hooks is None else hooks
    for hook in hooks:
        hook.on_start(run)
    for mod in run.modules.values():
        mod.train()
    start = time.perf_counter()
    out: StepOutput | None = None
    for batch in batches(run):
        done = train_step(run, batch)
        if done is None:  # a batch of a step that accumulates more (train.grad_accum)
            continue
        out = done
        for hook in hooks:
            hook.after_step(run, out)
    elapsed = time.perf_counter() - start
    for hook in hooks:
        hook.on_end(run)
    run.dist.close()
    return summary(run, elapsed, {} if out is None else {k: float(v) for k, v in out.terms.items()})


def summary(run: Run, elapsed: float, final_terms: dict[str, float]) -> dict[str, Any]:
    """The JSON summary of `train`/`distill` (fields `checkpoint`, `backbone`, `steps` are fixed names)."""
    seen = run.images_seen
    return {
        "command": run.command,
        "checkpoint": str(run.last_checkpoint),
        "backbone": str(run.run_dir / "backbone.pth"),
        "steps": run.step,
        "epochs": round(run.step / run.per_epoch, 3),
        "seconds": round(elapsed, 3),
        "images_per_s": round(seen / max(elapsed, 1e-9) if seen else run.previous_images_per_s, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "final_terms": final_terms,
        "metrics": str(run.run_dir / "metrics.csv"),
        "config": str(run.run_dir / "config.toml"),
    }
