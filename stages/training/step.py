"""`train_step`: one optimiser step of stage two, the hot path of `train` and `distill`.

L = sum_k w_k L_k over the terms of the run's `loss.method` (`stages.training.methods`; by default
ICD-Face, Yu et al., ICCV 2023: w_margin L_margin + w_fcd L_fcd + w_sdc L_sdc), each term one pure
function of `losses/`. The step runs forward, the method's terms, backward, the optimiser and
scheduler, then writes the batch into the feature bank (after the loss, so an anchor never meets its
own copy). It returns its numbers as tensors: turning them into Python numbers (a host sync on a GPU)
is left to the hooks that log them.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch.nn.parallel import DistributedDataParallel

from losses import weighted_sum
from models.preprocess import student_input
from stages.training.methods import step_inputs, step_stats, step_terms
from stages.training.shards import clip_gradients
from stages.training.state import Run


@dataclass
class StepOutput:
    """One step's numbers, detached: total loss, each weighted term's value, batch statistics."""

    loss: torch.Tensor  # scalar
    terms: dict[str, torch.Tensor]  # term name -> scalar (before weighting)
    stats: dict[str, torch.Tensor]  # ts_cos, intra_teacher, intra_student (distill only)
    images: int


def backward(run: Run, loss: torch.Tensor) -> None:
    """Backward of one batch's loss / `train.grad_accum` (scaled under fp16), gradients summed into the step's;
    the first batch of a step clears them first."""
    if run.micro == 0:
        run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss / run.cfg.train.grad_accum).backward()


def optimizer_step(run: Run) -> None:
    """Optional gradient clipping, optimiser and scheduler step, on the gradients `backward` summed."""
    if run.cfg.train.grad_clip > 0:
        run.scaler.unscale_(run.optimizer)
        clip_gradients(run, run.cfg.train.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()


def advance(run: Run, images: int) -> None:
    """Count a trained batch (one plan batch per rank); the plan's end starts the next epoch."""
    run.position += run.dist.world
    run.images_seen += images
    if run.position >= len(run.sampler):
        run.epoch, run.position = run.epoch + 1, 0


def update_bank(run: Run, batch: dict[str, torch.Tensor], emb: torch.Tensor) -> None:
    """Write the batch's entries into the feature bank after the loss; under torchrun every rank writes every
    rank's entries, in rank order, so all copies of the bank stay equal (the bank is not sharded)."""
    assert run.bank is not None
    labels, rows, flips = batch["labels"], batch["rows"], batch["flips"]
    if run.dist.active:
        meta = run.dist.all_gather(torch.stack([labels, rows, flips], 1).to(emb.device)).cpu()
        labels, rows, flips, emb = meta[:, 0], meta[:, 1], meta[:, 2], run.dist.all_gather(emb.contiguous())
    run.bank.update(labels, rows, flips, emb, run.step)


def gradient_sync(run: Run, last: bool) -> contextlib.ExitStack[bool | None]:
    """Under torchrun, DDP's all-reduce only on a step's last batch (`no_sync` on the ones before it)."""
    stack = contextlib.ExitStack()
    if not last:
        for net in run.nets.values():
            if isinstance(net, DistributedDataParallel):
                stack.enter_context(net.no_sync())
    return stack


def mean_output(parts: list[StepOutput]) -> StepOutput:
    """One step's numbers from its batches' (`train.grad_accum` > 1): means, and the images summed."""
    if len(parts) == 1:
        return parts[0]

    def mean(values: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(values).mean()

    return StepOutput(mean([p.loss for p in parts]), {k: mean([p.terms[k] for p in parts]) for k in parts[0].terms},
                      {k: mean([p.stats[k] for p in parts]) for k in parts[0].stats}, sum(p.images for p in parts))


def train_step(run: Run, batch: dict[str, torch.Tensor]) -> StepOutput | None:
    """Forward, the method's terms, backward and bank update for one batch; on a step's last batch
    (every batch unless `train.grad_accum` > 1) the optimiser step, which advances `run.step` and returns
    the step's numbers (None before it)."""
    last = run.micro == run.cfg.train.grad_accum - 1
    images = batch["images"].to(run.device, non_blocking=True)
    labels = batch["labels"].to(run.device, non_blocking=True)
    rows = batch["rows"].to(run.device)
    ctx = torch.autocast(run.device.type, dtype=run.autocast_dtype) if run.autocast_dtype else contextlib.nullcontext()
    with gradient_sync(run, last):
        with ctx:
            feats = run.nets["student"](student_input(images))
        x = step_inputs(run, feats, labels, rows, batch)
        terms = step_terms(run, x)
        stats = step_stats(x)
        loss = weighted_sum(terms, run.weights)
        backward(run, loss)
    if run.bank is not None:
        update_bank(run, batch, x.emb.detach())
    images_all = len(labels) * run.dist.world
    advance(run, images_all)
    run.partial.append(StepOutput(loss.detach(), {k: v.detach() for k, v in terms.items()}, stats, images_all))
    if not last:
        run.micro += 1
        return None
    optimizer_step(run)
    out = mean_output(run.partial)
    run.step, run.micro, run.partial = run.step + 1, 0, []
    return out
