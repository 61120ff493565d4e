"""Positive (same-identity) pairs of one step for the SDC term of ICD-Face (Yu et al., ICCV 2023).

DESIGN.md section 1: pairs come from the batch (the sampler puts M images of P identities into it)
and from the per-identity student feature bank. For every pair the student similarity is <e_i, e_j>
(e_j live in-batch, or the detached bank copy) and the teacher similarity <t_i, t_j> uses targets
read from the cache, so the teacher side is exact and never stale.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

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


def positive_pairs(emb: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor,
                   bank: FeatureBank | None, provider: TargetProvider, step: int, in_batch: bool = True,
                   use_bank: bool = True) -> PositivePairs:
    """The step's positive pairs from the sources `icd.in_batch` and `icd.use_bank` switch on.

    emb: [B, D_s] unit student embeddings; targets: [B, D_t] unit teacher targets; labels, rows: [B].
    In-batch pairs come first, then the bank's (anchor-major).
    """
    parts_s: list[torch.Tensor] = []
    parts_t: list[torch.Tensor] = []
    n_in = 0
    if in_batch:
        s, t = in_batch_pairs(emb, targets, labels, rows)
        parts_s.append(s)
        parts_t.append(t)
        n_in = len(s)
    if use_bank and bank is not None:
        s, t = bank_pairs(emb, targets, labels, rows, bank, provider, step)
        parts_s.append(s)
        parts_t.append(t)
    if not parts_s:
        return PositivePairs(emb.new_zeros(0), emb.new_zeros(0), 0)
    return PositivePairs(torch.cat(parts_s), torch.cat(parts_t), n_in)
