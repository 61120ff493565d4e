"""`train_step`: one optimiser step of ICD-Face, the hot path of stage two.

L = w_margin * L_margin + w_fcd * L_fcd + w_sdc * L_sdc (ICD-Face, Yu et al., ICCV 2023; DESIGN.md section 1)
+ w_imp * L_sdc over in-batch different-identity pairs (`stages.training.impostors`, off by default),
each term one pure function of `losses/`. The step runs forward, losses, backward, the optimiser and
scheduler, then writes the batch into the feature bank (after the loss, so an anchor never meets its
own copy). It returns its numbers as tensors: turning them into Python numbers (a host sync on a
GPU) is left to the hooks that log them. With `loss.margin_weight` = 0 the margin head is not run
(distillation as pure regression on the cached targets).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from losses import (
    feature_consistency_loss,
    identity_distribution_consistency,
    similarity_distribution_consistency,
    weighted_sum,
)
from models.preprocess import student_input
from stages.training.impostors import impostor_pairs
from stages.training.pairs import positive_pairs
from stages.training.run import Run


@dataclass
class StepOutput:
    """One step's numbers, detached: total loss, each weighted term's value, batch statistics."""

    loss: torch.Tensor  # scalar
    terms: dict[str, torch.Tensor]  # term name -> scalar (before weighting)
    stats: dict[str, torch.Tensor]  # ts_cos, intra_teacher, intra_student (distill only)
    images: int


def normalize(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise the last axis in float32."""
    return F.normalize(x.float(), dim=-1)


def distillation_terms(run: Run, emb: torch.Tensor, batch: dict[str, torch.Tensor], labels: torch.Tensor,
                       rows: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """FCD, SDC and (with `loss.impostor_sdc_weight` > 0) the impostor-pair SDC terms (float32) plus batch
    statistics; emb: [B, D_s] unit student embeddings. Both SDC terms start after the warm-up."""
    assert run.inputs.provider is not None and run.grid is not None
    icd = run.cfg.icd
    targets = normalize(run.inputs.provider.batch_targets(batch).to(run.device))
    projected = normalize(run.projector(emb)) if run.projector is not None else emb
    terms = {"fcd": feature_consistency_loss(projected, targets)}
    pairs = positive_pairs(emb, targets, labels, rows, run.bank, run.inputs.provider, run.step, sources=icd.pairs)
    started = run.step >= run.sdc_start
    if not started:
        terms["sdc"] = emb.sum() * 0.0
    elif icd.distribution == "per_identity":
        terms["sdc"] = identity_distribution_consistency(pairs.student, pairs.teacher, pairs.labels, run.grid,
                                                         icd.sigma, icd.kl_eps, icd.kl_direction, pairs.weights)
    else:
        terms["sdc"] = similarity_distribution_consistency(pairs.student, pairs.teacher, run.grid, icd.sigma,
                                                           icd.kl_eps, icd.kl_direction, pairs.weights)
    if run.cfg.loss.impostor_sdc_weight > 0:
        neg = impostor_pairs(emb, targets, labels, rows)
        terms["impostor_sdc"] = similarity_distribution_consistency(
            neg.student, neg.teacher, run.grid, icd.sigma, icd.kl_eps, direction=icd.kl_direction,
            weights=neg.weights) if started else emb.sum() * 0.0
    with torch.no_grad():
        stats = {"ts_cos": (projected * targets).sum(-1).mean()}
        if pairs.in_batch:
            w = pairs.weights[: pairs.in_batch]
            stats["intra_teacher"] = (w * pairs.teacher[: pairs.in_batch]).sum() / w.sum()
            stats["intra_student"] = (w * pairs.student[: pairs.in_batch]).sum() / w.sum()
    return terms, stats


def optimizer_step(run: Run, loss: torch.Tensor) -> None:
    """Backward (scaled under fp16), optional gradient clipping, optimiser and scheduler step."""
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if run.cfg.train.grad_clip > 0:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.parameters(), run.cfg.train.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()


def advance(run: Run, images: int) -> None:
    """Count the step; the batch after an epoch's last one starts the next epoch."""
    run.step += 1
    run.position += 1
    run.images_seen += images
    if run.position >= run.per_epoch:
        run.epoch, run.position = run.epoch + 1, 0


def train_step(run: Run, batch: dict[str, torch.Tensor]) -> StepOutput:
    """Forward, losses, backward, step and bank update for one batch; advances `run` by one step."""
    images = batch["images"].to(run.device, non_blocking=True)
    labels = batch["labels"].to(run.device, non_blocking=True)
    rows = batch["rows"].to(run.device)
    ctx = torch.autocast(run.device.type, dtype=run.autocast_dtype) if run.autocast_dtype else contextlib.nullcontext()
    with ctx:
        feats = run.student(student_input(images))
    emb = normalize(feats)
    terms = {"margin": run.modules["head"](feats.float(), labels)} if run.weights["margin"] > 0 else {}
    stats: dict[str, torch.Tensor] = {}
    if run.distill:
        extra, stats = distillation_terms(run, emb, batch, labels, rows)
        terms.update(extra)
    loss = weighted_sum(terms, run.weights)
    optimizer_step(run, loss)
    if run.bank is not None:
        run.bank.update(labels, rows, batch["flips"].to(run.device), emb.detach(), run.step)
    advance(run, len(labels))
    return StepOutput(loss.detach(), {k: v.detach() for k, v in terms.items()}, stats, len(labels))
