"""Feature consistency distillation (L_fcd of ICD-Face, Yu et al., ICCV 2023)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def feature_consistency_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """L_fcd = mean_i || normalize(s_i) - normalize(t_i) ||^2 (ICD-Face, ICCV 2023).

    ``student`` [B, D] (projected into teacher space when dimensions differ) and ``teacher`` [B, D],
    any norm; both are L2-normalised here, the teacher side is detached (frozen teacher). Returns a
    float32 (or float64) scalar in [0, 4] (squared chordal distance between unit vectors); 0 with the graph kept
    when B == 0.
    """
    if student.dim() != 2 or student.shape != teacher.shape:
        raise ValueError(f"feature_consistency_loss: expected student and teacher [B, D] of equal shape, got "
                         f"{tuple(student.shape)} and {tuple(teacher.shape)}")
    dtype = torch.promote_types(student.dtype, torch.float32)
    if student.shape[0] == 0:
        return student.to(dtype).sum() * 0.0
    s = F.normalize(student.to(dtype), dim=1)
    t = F.normalize(teacher.detach().to(dtype), dim=1)
    return (s - t).pow(2).sum(dim=1).mean()
