"""AdaDistill (Boutros, Struc, Damer, "AdaDistill: Adaptive Knowledge Distillation for Deep Face Recognition",
ECCV 2024): a margin softmax whose class centres are distilled from the teacher.

Read from the authors' public code, github.com/fdbtrs/AdaDistill (``utils/losses.py``:
``AdaptiveAArcFace``, ``AdaptiveACosFace``; ``train/train_AdaDistill.py``; ``config/config.py``). The
class matrix is not learned: before each step's loss, every labelled centre is moved towards the
sample's teacher embedding, c_y <- alpha c_y + (1 - alpha) t, with the adaptive alpha of `adadistill_alpha`
(early in training the student agrees little with the teacher, alpha is small and the centre is close
to the sample's own teacher embedding: sample-to-sample knowledge; later alpha grows and the centre
averages many teacher embeddings: sample-to-centre knowledge). The student is then trained with
ArcFace or CosFace logits (`losses.margin.combined_margin_logits`) against the updated, detached
centres, and with that cross-entropy only. Published settings (config.py): s = 64, m = 0.45 with
ArcFace (AdaArcDistill); the CosFace class default is m = 0.35 (AdaCosDistill); weighted alpha on.

Choices where the code is unclear: (1) a class that occurs several times in a batch gets the mean of
its samples' updates (the code's indexed assignment keeps an unspecified one of them); identical to the
code when each class occurs once. (2) The unweighted alpha branch of the code subtracts an attribute it
never defines; we use alpha = cos(s, t) there. (3) Centres stay unnormalised between updates, as in
the code, and are normalised for the logits; the code initialises them N(0, 0.01), and zeros work
the same (the first visit then copies the teacher embedding, up to alpha = 1e-6).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from losses.margin import combined_margin_logits, margin_params

_ALPHA_MIN = 1e-6


def _cosine_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (F.normalize(a, dim=1) * F.normalize(b, dim=1)).sum(dim=1)


def adadistill_alpha(student: torch.Tensor, teacher: torch.Tensor, own_centres: torch.Tensor,
                     weighted: bool = True) -> torch.Tensor:
    """Adaptive EMA factor alpha [B] in [1e-6, 1] per sample (AdaDistill, ECCV 2024), detached.

    Weighted (the published default): alpha = clip(cos(s, t) * clip(cos(c_y, t), 1e-6, 1), 1e-6, 1),
    with c_y the sample's current class centre; unweighted: alpha = clip(cos(s, t), 1e-6, 1).
    ``student``, ``teacher`` and ``own_centres`` [B, D], any norm (a student of another dimension must be
    projected into teacher space first).
    """
    if student.shape != teacher.shape or own_centres.shape != teacher.shape or teacher.dim() != 2:
        raise ValueError(f"adadistill_alpha: expected student, teacher and centres [B, D] of equal shape, got "
                         f"{tuple(student.shape)}, {tuple(teacher.shape)}, {tuple(own_centres.shape)}")
    with torch.no_grad():
        agreement = _cosine_rows(student, teacher).clamp(-1.0, 1.0)
        if weighted:
            agreement = agreement * _cosine_rows(own_centres, teacher).clamp(_ALPHA_MIN, 1.0)
        return agreement.clamp(_ALPHA_MIN, 1.0)


def teacher_centre_update(centres: torch.Tensor, student: torch.Tensor, teacher: torch.Tensor,
                          labels: torch.Tensor, weighted: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One AdaDistill centre update: (new centres [C, D], alpha [B]); c_y <- alpha c_y + (1 - alpha) t.

    ``centres`` [C, D] (unnormalised, not modified), ``student`` [B, D] and ``teacher`` [B, D] (normalised
    here), ``labels`` [B] in 0..C-1. A class seen k times in the batch gets the mean of its k updates, each
    computed from the centre before this batch; unseen classes are unchanged. Everything is detached.
    """
    if centres.dim() != 2 or labels.shape != student.shape[:1] or centres.shape[1] != teacher.shape[-1]:
        raise ValueError(f"teacher_centre_update: expected centres [C, D], student/teacher [B, D], labels [B], got "
                         f"{tuple(centres.shape)}, {tuple(student.shape)}, {tuple(teacher.shape)}, "
                         f"{tuple(labels.shape)}")
    with torch.no_grad():
        labels = labels.long()
        s = F.normalize(student.detach().to(centres.dtype), dim=1)
        t = F.normalize(teacher.detach().to(centres.dtype), dim=1)
        old = centres.detach()
        alpha = adadistill_alpha(s, t, old[labels], weighted)
        proposals = alpha[:, None] * old[labels] + (1.0 - alpha[:, None]) * t
        sums = torch.zeros_like(old).index_add_(0, labels, proposals)
        counts = torch.zeros(old.shape[0], dtype=old.dtype, device=old.device).index_add_(
            0, labels, torch.ones_like(alpha))
        seen = counts > 0
        new = torch.where(seen[:, None], sums / counts.clamp_min(1.0)[:, None], old)
    return new, alpha


def adadistill_logits(student: torch.Tensor, centres: torch.Tensor, labels: torch.Tensor, head: str = "arcface",
                      scale: float = 64.0, margin: float = 0.45) -> torch.Tensor:
    """AdaArcDistill / AdaCosDistill logits [B, C]: combined-margin logits of the student against the centres.

    cos = <normalize(s_i), normalize(c_j)> with the (already updated, detached) teacher centres [C, D];
    ``head`` "arcface" (m in radians, published 0.45) or "cosface" (m in cosine units, 0.35), ``scale`` s = 64.
    Float32 or wider, cosine units times ``scale``.
    """
    m1, m2, m3 = margin_params(head, margin)
    dtype = torch.promote_types(student.dtype, torch.float32)
    cosine = F.normalize(student.to(dtype), dim=1) @ F.normalize(centres.detach().to(dtype), dim=1).t()
    return combined_margin_logits(cosine.clamp(-1.0, 1.0), labels, scale, m1, m2, m3)


def adadistill_loss(student: torch.Tensor, centres: torch.Tensor, labels: torch.Tensor, head: str = "arcface",
                    scale: float = 64.0, margin: float = 0.45) -> torch.Tensor:
    """AdaDistill loss: mean cross-entropy (nats) of `adadistill_logits`; the only loss of the student (ECCV 2024).

    Call `teacher_centre_update` first and pass its centres, as the public code updates before the logits.
    """
    return F.cross_entropy(adadistill_logits(student, centres, labels, head, scale, margin), labels.long())
