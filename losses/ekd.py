"""Evaluation-oriented knowledge distillation (EKD, Huang et al., "Evaluation-oriented Knowledge Distillation
for Deep Face Recognition", CVPR 2022).

Read from the authors' public code, Tencent TFace ``recognition/tasks/ekd/distillation/ekd.py`` and
``train.py`` (the paper's full text was not reachable): thresholds are the similarities of the batch's
negative pairs at given FPRs (TFace: FPR 1e-1 ... 1e-6), computed for the teacher and, separately,
for the student, each smoothed by an EMA (momentum 0.01, from zeros). A pair's soft rank is the number
of thresholds its similarity exceeds, sum_k sigmoid((sim - thr_k) / T) with T = 0.01; the loss is the
mean squared difference between the student's and the teacher's soft ranks, over all positive pairs
(weight 0.02) and over the 2000 negatives the student scores highest (weight 0.01). A pair whose
relation to the thresholds is the same for both models has (almost) equal ranks and adds (almost)
nothing: the "critical relations" of the paper are the pairs whose ranks differ. `ekd_loss` follows
the code (soft weighting of every pair); ``critical_only=True`` keeps only the pairs whose hard ranks
differ (`critical_pair_mask`), our reading of the paper's selection step.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

EKD_FPRS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


def pair_similarities(emb: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities of the batch's pairs i < j (row-major order): (positive [P], negative [N]).

    ``emb`` [B, D] (normalised here), ``labels`` [B]; positive = same label. float32 or wider.
    """
    e = F.normalize(emb.to(torch.promote_types(emb.dtype, torch.float32)), dim=1)
    upper = torch.triu(torch.ones(e.shape[0], e.shape[0], dtype=torch.bool, device=e.device), diagonal=1)
    sims = (e @ e.t())[upper]
    same = (labels[:, None] == labels[None, :])[upper]
    return sims[same], sims[~same]


def fpr_thresholds(neg_sims: torch.Tensor, fprs: Sequence[float]) -> torch.Tensor:
    """Similarity thresholds [K] at the given false-positive rates (cosine units; EKD, CVPR 2022).

    thr_k = the floor(N * fpr_k)-th largest of the N negative similarities (0-based, clamped to N - 1),
    TFace's ``sorted_neg[N // (1 / fpr)]``. ``neg_sims`` [N], N >= 1. Detached.
    """
    if neg_sims.dim() != 1 or neg_sims.numel() == 0:
        raise ValueError(f"fpr_thresholds: need negative similarities [N] with N >= 1, got {tuple(neg_sims.shape)}")
    if not all(0.0 <= f <= 1.0 for f in fprs):
        raise ValueError(f"fpr_thresholds: FPRs must lie in [0, 1], got {list(fprs)}")
    n = neg_sims.numel()
    ordered = torch.sort(neg_sims.detach(), descending=True).values
    index = [min(int(math.floor(n * f + 1e-9)), n - 1) for f in fprs]
    return ordered[torch.tensor(index, device=ordered.device)]


def ekd_thresholds(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
                   fprs: Sequence[float] = EKD_FPRS) -> tuple[torch.Tensor, torch.Tensor]:
    """This batch's (student, teacher) thresholds [K] each, from each model's own negative pairs (TFace EKD).

    ``student`` [B, D], ``teacher`` [B, D_t], ``labels`` [B]; needs at least one negative pair. Detached.
    """
    return (fpr_thresholds(pair_similarities(student.detach(), labels)[1], fprs),
            fpr_thresholds(pair_similarities(teacher.detach(), labels)[1], fprs))


def ema_thresholds(running: torch.Tensor, batch: torch.Tensor, momentum: float = 0.01) -> torch.Tensor:
    """EMA of thresholds, momentum * batch + (1 - momentum) * running (TFace EKD: momentum 0.01, running from 0)."""
    return momentum * batch.detach() + (1.0 - momentum) * running


def soft_rank(sims: torch.Tensor, thresholds: torch.Tensor, temperature: float) -> torch.Tensor:
    """Soft number of thresholds each similarity exceeds, r = sum_k sigmoid((sim - thr_k) / T) (EKD, CVPR 2022).

    ``sims`` [P], ``thresholds`` [K] (cosine units), ``temperature`` T in cosine units. Returns [P] in [0, K].
    """
    return torch.sigmoid((sims[:, None] - thresholds[None, :]) / temperature).sum(dim=1)


def critical_pair_mask(student_sims: torch.Tensor, teacher_sims: torch.Tensor, student_thresholds: torch.Tensor,
                       teacher_thresholds: torch.Tensor) -> torch.Tensor:
    """Bool [P]: pairs on a different side of some threshold for student and teacher (EKD's critical relations).

    With both threshold vectors in the same FPR order the set of thresholds a similarity exceeds is fixed
    by how many it exceeds, so this compares the hard counts sum_k [sim > thr_k].
    """
    s_count = (student_sims.detach()[:, None] > student_thresholds[None, :]).sum(dim=1)
    t_count = (teacher_sims.detach()[:, None] > teacher_thresholds[None, :]).sum(dim=1)
    return s_count != t_count


def rank_loss(student_sims: torch.Tensor, teacher_sims: torch.Tensor, student_thresholds: torch.Tensor,
              teacher_thresholds: torch.Tensor, temperature: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """EKD rank loss: mean over pairs of (r_s - r_t)^2, soft ranks against each model's thresholds (CVPR 2022).

    ``student_sims``, ``teacher_sims`` [P] similarities of the same pairs, thresholds [K] each; the
    teacher side is detached. ``mask`` [P] bool keeps a subset (the mean is over kept pairs). Scalar in
    squared threshold counts; 0 with the graph kept when no pair is kept.
    """
    if student_sims.shape != teacher_sims.shape or student_sims.dim() != 1:
        raise ValueError(f"rank_loss: expected student and teacher sims [P] of equal shape, got "
                         f"{tuple(student_sims.shape)} and {tuple(teacher_sims.shape)}")
    if mask is not None:
        student_sims, teacher_sims = student_sims[mask], teacher_sims[mask]
    if student_sims.numel() == 0:
        return student_sims.sum() * 0.0
    r_s = soft_rank(student_sims, student_thresholds.detach(), temperature)
    r_t = soft_rank(teacher_sims.detach(), teacher_thresholds.detach(), temperature)
    return (r_s - r_t).pow(2).mean()


def ekd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor,
    fprs: Sequence[float] = EKD_FPRS,
    temperature: float = 0.01,
    top_k: int = 2000,
    pos_weight: float = 0.02,
    neg_weight: float = 0.01,
    student_thresholds: torch.Tensor | None = None,
    teacher_thresholds: torch.Tensor | None = None,
    critical_only: bool = False,
) -> torch.Tensor:
    """EKD: pos_weight * rank_loss(positives) + neg_weight * rank_loss(hardest negatives) (CVPR 2022, TFace).

    ``student`` [B, D] and ``teacher`` [B, D_t] embeddings (normalised here; the teacher is detached),
    ``labels`` [B]. Negatives are the ``top_k`` negative pairs with the highest student similarity.
    Thresholds [K] default to this batch's (`ekd_thresholds` at ``fprs``); pass the running EMA ones
    (`ema_thresholds`) to match TFace. Defaults are TFace's: FPRs 1e-1..1e-6, T = 0.01, top_k = 2000,
    weights 0.02 / 0.01. ``critical_only`` restricts both terms to `critical_pair_mask`. Float32 scalar.
    """
    if student.dim() != 2 or teacher.dim() != 2 or not (student.shape[0] == teacher.shape[0] == labels.shape[0]):
        raise ValueError(f"ekd_loss: expected student [B, D], teacher [B, D_t], labels [B], got "
                         f"{tuple(student.shape)}, {tuple(teacher.shape)}, {tuple(labels.shape)}")
    pos_s, neg_s = pair_similarities(student, labels)
    pos_t, neg_t = pair_similarities(teacher.detach(), labels)
    if student_thresholds is None or teacher_thresholds is None:
        batch_s, batch_t = fpr_thresholds(neg_s, fprs), fpr_thresholds(neg_t, fprs)
        student_thresholds = batch_s if student_thresholds is None else student_thresholds
        teacher_thresholds = batch_t if teacher_thresholds is None else teacher_thresholds
    hardest = torch.topk(neg_s.detach(), k=min(top_k, neg_s.numel())).indices
    neg_s, neg_t = neg_s[hardest], neg_t[hardest]
    pos_mask = critical_pair_mask(pos_s, pos_t, student_thresholds, teacher_thresholds) if critical_only else None
    neg_mask = critical_pair_mask(neg_s, neg_t, student_thresholds, teacher_thresholds) if critical_only else None
    pos_term = rank_loss(pos_s, pos_t, student_thresholds, teacher_thresholds, temperature, pos_mask)
    neg_term = rank_loss(neg_s, neg_t, student_thresholds, teacher_thresholds, temperature, neg_mask)
    return pos_weight * pos_term + neg_weight * neg_term
