"""MarginDistillation (Svitov & Alyamkin, "MarginDistillation: distillation for margin-based softmax",
arXiv:2003.02586, 2020).

Read from the authors' public code, github.com/david-svitov/margindistillation (``train/train.py``,
loss ``margin_distillation``; ``train/config.py``): the student is trained with ArcFace against the
teacher's frozen class centres, and each sample's angular margin grows with how close the teacher puts
that sample to its class centre, m_i = m_min + (m_max - m_min) * cos(t_i, c_{y_i}) / max_j cos(t_j, c_{y_j})
over the batch; published s = 64, m_min = 0.2, m_max = 0.5.

Choices: the code's centres are the teacher's trained ArcFace head; the teacher cache here holds only
embeddings, so `teacher_class_centres` uses the renormalised mean teacher embedding of each class
instead (close to the head's rows for a well-trained ArcFace teacher). The margin is per sample (the
margin at sample i's own class), as in the code; the cosine ratio is clipped to [0, 1] so margins stay
in [m_min, m_max]. The ArcFace target uses the house fallback of `losses.margin.combined_margin_target`
where theta + m > pi.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from losses.margin import _safe_sin_from_cos

_EPS = 1e-12


def teacher_class_centres(teacher_emb: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class centres [C, D]: normalize(mean_{i: y_i = c} normalize(t_i)) (MarginDistillation's teacher centres).

    ``teacher_emb`` [N, D] (any norm), ``labels`` [N] in 0..C-1. A class with no sample gets a zero row.
    Detached, float32 or wider.
    """
    if teacher_emb.dim() != 2 or labels.shape != teacher_emb.shape[:1]:
        raise ValueError(f"teacher_class_centres: expected teacher_emb [N, D] and labels [N], got "
                         f"{tuple(teacher_emb.shape)} and {tuple(labels.shape)}")
    t = F.normalize(teacher_emb.detach().to(torch.promote_types(teacher_emb.dtype, torch.float32)), dim=1)
    sums = torch.zeros(num_classes, t.shape[1], dtype=t.dtype, device=t.device).index_add_(0, labels.long(), t)
    return F.normalize(sums, dim=1)


def class_margins(teacher_emb: torch.Tensor, labels: torch.Tensor, centres: torch.Tensor,
                  m_min: float = 0.2, m_max: float = 0.5) -> torch.Tensor:
    """Angular margin [B] (radians) of each sample at its own class: m_min + (m_max - m_min) * d_i / max_j d_j.

    d_i = cos(t_i, c_{y_i}), the teacher's closeness of sample i to its class centre, max over the batch
    (MarginDistillation public code); the ratio is clipped to [0, 1], so a sample on the far side of its
    centre (or a batch with max_j d_j <= 0) gets m_min. ``teacher_emb`` [B, D], ``labels`` [B],
    ``centres`` [C, D]. Detached. Published m_min 0.2, m_max 0.5.
    """
    if teacher_emb.dim() != 2 or labels.shape != teacher_emb.shape[:1] or centres.shape[1:] != teacher_emb.shape[1:]:
        raise ValueError(f"class_margins: expected teacher_emb [B, D], labels [B], centres [C, D], got "
                         f"{tuple(teacher_emb.shape)}, {tuple(labels.shape)}, {tuple(centres.shape)}")
    with torch.no_grad():
        dtype = torch.promote_types(teacher_emb.dtype, torch.float32)
        t = F.normalize(teacher_emb.detach().to(dtype), dim=1)
        c = F.normalize(centres.detach().to(dtype), dim=1)[labels.long()]
        closeness = (t * c).sum(dim=1)
        if closeness.numel() == 0:
            return closeness
        ratio = (closeness / closeness.max().clamp_min(_EPS)).clamp(0.0, 1.0)
        return m_min + (m_max - m_min) * ratio


def arcface_target(cos: torch.Tensor, margins: torch.Tensor) -> torch.Tensor:
    """cos(theta + m_i) per sample for ``cos`` [B] and ``margins`` [B] (radians) (ArcFace, CVPR 2019).

    Expanded as cos cos(m) - sin sin(m) with finite gradients at cos = +-1; where theta + m > pi the
    fallback cos - sin(pi - m) m of `losses.margin.combined_margin_target` keeps it monotone. [B].
    """
    m = margins.to(cos.dtype)
    shifted = cos * torch.cos(m) - _safe_sin_from_cos(cos) * torch.sin(m)
    fallback = cos - torch.sin(math.pi - m) * m
    return torch.where(cos > torch.cos(math.pi - m), shifted, fallback)


def margin_distillation_logits(student: torch.Tensor, centres: torch.Tensor, labels: torch.Tensor,
                               margins: torch.Tensor, scale: float = 64.0) -> torch.Tensor:
    """Logits [B, C]: s * cos(theta_{i,y_i} + m_i) at the label, s * cos(theta_{i,j}) elsewhere (MarginDistillation).

    ``student`` [B, D] (normalised here; in teacher space), ``centres`` [C, D] frozen teacher centres
    (detached), ``labels`` [B], ``margins`` [B] radians from `class_margins`. Float32 or wider.
    """
    if student.dim() != 2 or centres.dim() != 2 or student.shape[1] != centres.shape[1] \
            or labels.shape != student.shape[:1] or margins.shape != labels.shape:
        raise ValueError(f"margin_distillation_logits: expected student [B, D], centres [C, D], labels [B], "
                         f"margins [B], got {tuple(student.shape)}, {tuple(centres.shape)}, "
                         f"{tuple(labels.shape)}, {tuple(margins.shape)}")
    dtype = torch.promote_types(student.dtype, torch.float32)
    cosine = (F.normalize(student.to(dtype), dim=1) @ F.normalize(centres.detach().to(dtype), dim=1).t())
    cosine = cosine.clamp(-1.0, 1.0)
    labels = labels.long()
    target = arcface_target(cosine.gather(1, labels[:, None]).squeeze(1), margins.detach())
    one_hot = F.one_hot(labels, cosine.shape[1]).bool()
    return scale * torch.where(one_hot, target[:, None], cosine)


def margin_distillation_loss(student: torch.Tensor, centres: torch.Tensor, labels: torch.Tensor,
                             margins: torch.Tensor, scale: float = 64.0) -> torch.Tensor:
    """MarginDistillation loss: mean cross-entropy (nats) of `margin_distillation_logits` (arXiv:2003.02586)."""
    return F.cross_entropy(margin_distillation_logits(student, centres, labels, margins, scale), labels.long())
