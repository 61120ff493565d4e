"""Positive (same-identity) pairs of one step for the SDC term of ICD-Face (Yu et al., ICCV 2023).

DESIGN.md section 1: pairs come from the batch (the sampler puts M images of P identities into it)
and from the per-identity student feature bank (`icd.pairs` = "both", "batch" or "bank"). For every
pair the student similarity is <e_i, e_j> (e_j live in-batch, or the detached bank copy) and the
teacher similarity <t_i, t_j> uses targets read from the cache, so the teacher side is exact and
never stale. One image pair can occur several times in a step (a short identity's group repeats
rows, the bank can hold a row in several slots, and a pair can be both in the batch and in the
bank); `distinct_pair_weights` makes each distinct image pair count once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from config.choices import PAIR_SOURCES, check_choice
from models.device import to_device
from stages.training.bank import FeatureBank
from stages.training.targets import TargetProvider


@dataclass
class PositivePairs:
    """Same-identity pair similarities of one step: student side live (or bank, detached), teacher from cache."""

    student: torch.Tensor  # [P] cosine, in [-1, 1]
    teacher: torch.Tensor  # [P] cosine, in [-1, 1]
    weights: torch.Tensor  # [P] float32, 1 / copies of the pair's image pair in this step (sum: distinct pairs)
    in_batch: int  # how many of the P pairs are in-batch (they come first)
    labels: torch.Tensor  # [P] int64 identity of each pair


@dataclass
class PairSide:
    """Pairs of one source: similarities [P], the dataset rows [P] of both images and the identity [P]."""

    student: torch.Tensor
    teacher: torch.Tensor
    rows_a: torch.Tensor
    rows_b: torch.Tensor
    labels: torch.Tensor


def in_batch_pairs(emb: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor) -> PairSide:
    """Every in-batch pair (i < j) of the same identity and different rows.

    emb, targets: [B, D] on the training device; labels, rows: [B] on the host (the batch as loaded), so
    the pairs are found without waiting for the device. The returned rows and labels stay on the host.
    """
    same = (labels[:, None] == labels[None, :]) & (rows[:, None] != rows[None, :])
    i, j = torch.nonzero(torch.triu(same, diagonal=1), as_tuple=True)
    di, dj = to_device(i, emb.device), to_device(j, emb.device)
    return PairSide((emb[di] * emb[dj]).sum(-1), (targets[di] * targets[dj]).sum(-1), rows[i], rows[j], labels[i])


def bank_pairs(emb: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor,
               bank: FeatureBank, provider: TargetProvider, step: int) -> PairSide:
    """Each anchor with its identity's valid bank slots: student <e_i, bank>, teacher from the cache.

    labels, rows: [B] host tensors; the bank's slot table lives on the host too, so the valid slots and
    their teacher targets are found there and only indices and targets travel to the device.
    """
    bank_emb, bank_rows, bank_flips, valid = bank.gather(labels, rows, step)
    if not bool(valid.any()):
        empty = emb.new_zeros(0)
        none = rows.new_zeros(0)
        return PairSide(empty, empty, none, none, labels.new_zeros(0))
    anchor, slot = torch.nonzero(valid, as_tuple=True)
    da, ds = to_device(anchor, emb.device), to_device(slot, emb.device)
    student = (emb[da] * bank_emb[da, ds].to(emb.dtype)).sum(-1)
    teacher_bank = provider.lookup(bank_rows[anchor, slot].numpy(), bank_flips[anchor, slot].numpy().astype(np.uint8))
    teacher = (targets[da] * to_device(teacher_bank, targets.device, targets.dtype)).sum(-1)
    return PairSide(student, teacher, rows[anchor], bank_rows[anchor, slot], labels[anchor])


def distinct_pair_weights(rows_a: torch.Tensor, rows_b: torch.Tensor) -> torch.Tensor:
    """w_p = 1 / (how many of the P pairs join the same two images {rows_a[p], rows_b[p]}): [P] float32.

    rows_a, rows_b: [P] int64 dataset rows (unordered: (a, b) and (b, a) are one image pair). With
    these weights in the kernel densities of ICD-Face's SDC term (Yu et al., ICCV 2023) every distinct
    image pair of the step has total weight 1, however many copies of it the batch and bank hold.
    """
    if rows_a.numel() == 0:
        return torch.zeros(0, dtype=torch.float32, device=rows_a.device)
    lo, hi = torch.minimum(rows_a, rows_b), torch.maximum(rows_a, rows_b)
    keys = lo * (int(hi.max()) + 1) + hi
    _, inverse, counts = torch.unique(keys, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse].to(torch.float32)


def positive_pairs(emb: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor,
                   bank: FeatureBank | None, provider: TargetProvider, step: int,
                   sources: str = "both") -> PositivePairs:
    """The step's positive pairs from `sources` (`icd.pairs`: "both", "batch" or "bank"), each image pair weighted once.

    emb: [B, D_s] unit student embeddings; targets: [B, D_t] unit teacher targets (on the device);
    labels, rows: [B] on the host. In-batch pairs come first, then the bank's (anchor-major). The pair
    weights are computed on the host from the rows; what is returned is on the device of `emb`.
    """
    check_choice(sources, PAIR_SOURCES, "icd.pairs")
    parts: list[PairSide] = []
    if sources in ("both", "batch"):
        parts.append(in_batch_pairs(emb, targets, labels, rows))
    n_in = len(parts[0].student) if parts else 0
    if sources in ("both", "bank") and bank is not None:
        parts.append(bank_pairs(emb, targets, labels, rows, bank, provider, step))
    if not parts:
        return PositivePairs(emb.new_zeros(0), emb.new_zeros(0), emb.new_zeros(0), 0,
                             labels.new_zeros(0).to(emb.device))
    rows_a, rows_b = torch.cat([p.rows_a for p in parts]), torch.cat([p.rows_b for p in parts])
    weights = to_device(distinct_pair_weights(rows_a, rows_b), emb.device)
    pair_labels = to_device(torch.cat([p.labels for p in parts]), emb.device)
    return PositivePairs(torch.cat([p.student for p in parts]), torch.cat([p.teacher for p in parts]),
                         weights, n_in, pair_labels)
