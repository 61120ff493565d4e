"""Relational knowledge distillation (RKD, Park et al., "Relational Knowledge Distillation", CVPR 2019).

Distance-wise and angle-wise relations of a batch, as defined in the paper and in its public code
(github.com/lenscloth/RKD, ``metric/loss.py``: ``RkdDistance``, ``RKdAngle``). Only relations are
compared, so student [B, D_s] and teacher [B, D_t] may have different dimensions. Published weights
(paper; also mdistiller's ``rkd_loss`` defaults): distance 25, angle 50.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

_SQ_EPS = 1e-12


def _check_pair(student: torch.Tensor, teacher: torch.Tensor, name: str) -> torch.dtype:
    if student.dim() != 2 or teacher.dim() != 2 or student.shape[0] != teacher.shape[0]:
        raise ValueError(f"{name}: expected student [B, D_s] and teacher [B, D_t] with the same B, got "
                         f"{tuple(student.shape)} and {tuple(teacher.shape)}")
    return torch.promote_types(torch.promote_types(student.dtype, teacher.dtype), torch.float32)


def _relation_loss(student: torch.Tensor, teacher: torch.Tensor, relation: Callable[[torch.Tensor], torch.Tensor],
                   min_batch: int, name: str) -> torch.Tensor:
    """smooth-L1 (beta 1) between `relation` of the student and of the (detached) teacher; 0 with the graph kept
    when B < min_batch."""
    dtype = _check_pair(student, teacher, name)
    if student.shape[0] < min_batch:
        return student.to(dtype).sum() * 0.0
    with torch.no_grad():
        target = relation(teacher.detach().to(dtype))
    return F.smooth_l1_loss(relation(student.to(dtype)), target, beta=1.0)


def pairwise_distances(x: torch.Tensor) -> torch.Tensor:
    """Euclidean distances [B, B] between the rows of ``x`` [B, D] (embedding units), 0 on the diagonal.

    sqrt(max(|x_i|^2 + |x_j|^2 - 2 <x_i, x_j>, 1e-12)) as in the RKD code; the diagonal is set to exactly
    0 with a zero gradient.
    """
    sq = x.pow(2).sum(dim=1)
    d = (sq[:, None] + sq[None, :] - 2.0 * x @ x.t()).clamp_min(_SQ_EPS).sqrt()
    eye = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
    return torch.where(eye, torch.zeros_like(d), d)


def normalized_distances(x: torch.Tensor) -> torch.Tensor:
    """Pairwise distances [B, B] divided by their mean over the B(B-1) off-diagonal pairs (unitless; RKD, CVPR 2019).

    ``x`` [B, D] with B >= 2.
    """
    d = pairwise_distances(x)
    b = x.shape[0]
    return d / (d.sum() / (b * (b - 1))).clamp_min(_SQ_EPS)


def rkd_distance_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """RKD distance-wise loss: smooth-L1 (beta 1) between normalised pairwise distances (Park et al., CVPR 2019).

    L_D = mean over all B x B entries of huber(d_s / mu_s - d_t / mu_t), mu = mean off-diagonal
    distance of the batch (the diagonal, 0 on both sides, is in the mean as in the public code).
    ``student`` [B, D_s], ``teacher`` [B, D_t] (any norm; the teacher is detached). Returns a
    float32 (or float64) scalar, unitless; 0 with the graph kept when B < 2. Published weight 25.
    """
    return _relation_loss(student, teacher, normalized_distances, 2, "rkd_distance_loss")


def triplet_angles(x: torch.Tensor) -> torch.Tensor:
    """Cosines [B, B, B]: entry (a, j, k) = cos of the angle at anchor x_a between x_j and x_k (RKD, CVPR 2019).

    <e_aj, e_ak> with e_aj = (x_j - x_a) / ||x_j - x_a||; entries with x_j == x_a or x_k == x_a (j == a,
    k == a, repeated rows) are 0 (a zero difference normalises to 0), entries with j == k otherwise 1, as in
    the public code. ``x`` [B, D].
    Computed from the Gram matrix G = x x^T in float64, <x_j - x_a, x_k - x_a> = G_jk - G_aj - G_ak + G_aa,
    so no [B, B, D] difference tensor is built: O(B^2 D + B^3) time, O(B^3) memory. Returns ``x``'s dtype.
    """
    x64 = x.double()
    g = x64 @ x64.t()
    sq = g.diagonal()
    dots = g[None, :, :] - g[:, :, None] - g[:, None, :] + sq[:, None, None]
    norms = (sq[:, None] + sq[None, :] - 2.0 * g).clamp_min(_SQ_EPS * _SQ_EPS).sqrt()  # max(||x_j - x_a||, 1e-12)
    cos = dots / (norms[:, :, None] * norms[:, None, :])
    same = (x[:, None, :] == x[None, :, :]).all(dim=2)  # x_j == x_a: a zero difference (j == a among them)
    degenerate = same[:, :, None] | same[:, None, :]
    return torch.where(degenerate, torch.zeros_like(cos), cos).to(x.dtype)


def rkd_angle_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """RKD angle-wise loss: smooth-L1 (beta 1) between triplet angle cosines (Park et al., CVPR 2019).

    L_A = mean over all B^3 (anchor, j, k) entries of huber(cos_s - cos_t) (`triplet_angles`; degenerate
    entries are equal on both sides and count in the mean, as in the public code). ``student`` [B, D_s],
    ``teacher`` [B, D_t] (any norm; the teacher is detached). Memory O(B^3). Returns a float32
    (or float64) scalar, unitless; 0 with the graph kept when B < 3. Published weight 50.
    """
    return _relation_loss(student, teacher, triplet_angles, 3, "rkd_angle_loss")
