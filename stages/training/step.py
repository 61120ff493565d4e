"""One ICD-Face training step's loss terms, wired from the pure loss functions.

L = L_margin + w_fcd * L_fcd + w_sdc * L_sdc (ICD-Face, Yu et al., ICCV 2023; DESIGN.md section 1).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from config import IcdConfig
from losses import feature_consistency_loss, similarity_distribution_consistency
from stages.training.bank import FeatureBank
from stages.training.targets import TargetProvider


@dataclass
class PositivePairs:
    """Same-identity pair similarities of one step: student side live (or bank, detached), teacher from cache."""

    student: torch.Tensor  # [P] cosine, in [-1, 1]
    teacher: torch.Tensor  # [P] cosine, in [-1, 1]
    in_batch: int  # how many of the P pairs are in-batch (they come first)


def in_batch_pairs(emb: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor,
                   rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Similarities of every in-batch pair (i < j) of the same identity and different rows: ([P], [P])."""
    same = (labels[:, None] == labels[None, :]) & (rows[:, None] != rows[None, :])
    i, j = torch.nonzero(torch.triu(same, diagonal=1), as_tuple=True)
    return (emb[i] * emb[j]).sum(-1), (targets[i] * targets[j]).sum(-1)


def bank_pairs(emb: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor,
               bank: FeatureBank, provider: TargetProvider, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Similarities of each anchor with its identity's valid bank slots: student <e_i, bank>, teacher from cache."""
    bank_emb, bank_rows, bank_flips, valid = bank.gather(labels, rows, step)
    if not bool(valid.any()):
        empty = emb.new_zeros(0)
        return empty, empty
    anchor, slot = torch.nonzero(valid, as_tuple=True)
    student = (emb[anchor] * bank_emb[anchor, slot].to(emb.dtype)).sum(-1)
    teacher_bank = provider.lookup(bank_rows[anchor, slot].cpu().numpy(),
                                   bank_flips[anchor, slot].cpu().numpy().astype(np.uint8))
    teacher = (targets[anchor] * teacher_bank.to(targets.device, targets.dtype)).sum(-1)
    return student, teacher


def collect_pairs(emb: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor,
                  bank: FeatureBank | None, provider: TargetProvider, step: int, icd: IcdConfig) -> PositivePairs:
    """The step's positive pairs from the sources `icd.in_batch` and `icd.use_bank` switch on."""
    parts_s: list[torch.Tensor] = []
    parts_t: list[torch.Tensor] = []
    n_in = 0
    if icd.in_batch:
        s, t = in_batch_pairs(emb, targets, labels, rows)
        parts_s.append(s)
        parts_t.append(t)
        n_in = len(s)
    if icd.use_bank and bank is not None:
        s, t = bank_pairs(emb, targets, labels, rows, bank, provider, step)
        parts_s.append(s)
        parts_t.append(t)
    if not parts_s:
        return PositivePairs(emb.new_zeros(0), emb.new_zeros(0), 0)
    return PositivePairs(torch.cat(parts_s), torch.cat(parts_t), n_in)


def distillation_terms(emb: torch.Tensor, projected: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor,
                       rows: torch.Tensor, bank: FeatureBank | None, provider: TargetProvider, step: int,
                       icd: IcdConfig, grid: torch.Tensor, sdc_on: bool) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """FCD and SDC terms (float32) plus batch statistics for the log.

    emb: [B, D_s] unit student embeddings; projected: [B, D_t] unit P(e); targets: [B, D_t] unit teacher.
    """
    terms = {"fcd": feature_consistency_loss(projected, targets)}
    pairs = collect_pairs(emb, targets, labels, rows, bank, provider, step, icd)
    if sdc_on:
        terms["sdc"] = similarity_distribution_consistency(
            pairs.student, pairs.teacher, grid, icd.sigma, icd.kl_eps, direction=icd.kl_direction)
    else:
        terms["sdc"] = emb.sum() * 0.0
    with torch.no_grad():
        stats = {
            "ts_cos": float((projected * targets).sum(-1).mean()),
            "pairs": float(len(pairs.student)),
        }
        if pairs.in_batch:
            stats["intra_teacher"] = float(pairs.teacher[: pairs.in_batch].mean())
            stats["intra_student"] = float(pairs.student[: pairs.in_batch].mean())
    return terms, stats


def normalize(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.float(), dim=-1)
