"""Similarity distribution consistency (L_sdc of ICD-Face, Yu et al., ICCV 2023).

Similarities of positive pairs are turned into distributions by a Gaussian kernel density on a
fixed grid over [-1, 1], as in DDL (Huang et al., "Improving Face Recognition from Hard Samples via
Distribution Distillation Loss", ECCV 2020); the student's distribution is pulled to the teacher's by KL.
"""
from __future__ import annotations

import torch

from common.errors import ConfigError
from config.choices import KL_DIRECTIONS, check_choice

_MIN_MASS = 1e-30


def similarity_grid(step: float, device: torch.device | str | None = None) -> torch.Tensor:
    """Grid [G] float32 over [-1, 1] inclusive with spacing ``step`` (cosine units), G = round(2/step) + 1.

    The histogram support of DDL (ECCV 2020) as used by ICD-Face (ICCV 2023); default step 0.01 -> G = 201.
    The kernel bandwidth must be at least one step (`config.choices.check_bandwidth`, see `kernel_density`).
    """
    if not step > 0:
        raise ConfigError(f"config key 'icd.grid_step' must be positive, got {step}")
    points = max(int(round(2.0 / step)) + 1, 2)
    return torch.linspace(-1.0, 1.0, points, dtype=torch.float32, device=device)


def gaussian_kernel(sims: torch.Tensor, grid: torch.Tensor, sigma: float) -> torch.Tensor:
    """k[p, g] = exp(-(grid[g] - sims[p])^2 / (2 sigma^2)): [P, G] in float32 or wider (DDL, ECCV 2020).

    ``sims`` [P] cosines, ``grid`` [G], ``sigma`` > 0 in cosine units (see `kernel_density` for why the
    config also refuses sigma below the grid step).
    """
    if not sigma > 0:
        raise ConfigError(f"config key 'icd.sigma' must be positive, got {sigma}")
    dtype = torch.promote_types(torch.promote_types(sims.dtype, grid.dtype), torch.float32)
    diff = grid.to(dtype)[None, :] - sims.to(dtype)[:, None]
    return torch.exp(-diff.pow(2) / (2.0 * sigma * sigma))


def kernel_density(sims: torch.Tensor, grid: torch.Tensor, sigma: float,
                   weights: torch.Tensor | None = None) -> torch.Tensor:
    """Gaussian kernel density of similarities on a grid, normalised to sum 1 (DDL, ECCV 2020; ICD-Face, ICCV 2023).

    p[g] = sum_k w_k exp(-(grid[g] - sims[k])^2 / (2 sigma^2)) / sum_g (...). ``sims`` [P] cosine
    similarities, ``grid`` [G], ``sigma`` bandwidth in cosine units, ``weights`` [P] optional
    non-negative pair weights (bool masks allowed). Returns [G] in float32 or wider; all zeros (no NaN) when there
    is no mass (P == 0 or all weights 0).

    Why the config refuses sigma < grid step (`icd.sigma`, `icd.grid_step`, `config.choices.check_bandwidth`):
    the density is the Gaussian sampled at the grid nodes only. By Poisson summation a kernel's mass on
    a grid of step h varies with where its centre sits between two nodes by a relative 4 exp(-2 pi^2
    sigma^2 / h^2) peak to peak: below 1e-6 at sigma = h, but 3% at h/2 and 73% at h/4. Below one step
    the density becomes a comb of the nearest nodes, so the loss and its gradient depend on each
    similarity's position between nodes rather than on the distributions; far below (sigma <= h/30 in
    float32) a similarity midway between two nodes puts no mass on any node, and when no similarity
    is near a node both densities are all zeros: SDC's loss and gradient are silently 0. This function
    itself accepts any sigma > 0.
    """
    if sims.dim() != 1 or grid.dim() != 1:
        raise ValueError(f"kernel_density: expected sims [P] and grid [G], got {tuple(sims.shape)} and "
                         f"{tuple(grid.shape)}")
    kernel = gaussian_kernel(sims, grid, sigma)
    if weights is not None:
        if weights.shape != sims.shape:
            raise ValueError(f"kernel_density: weights {tuple(weights.shape)} must match sims {tuple(sims.shape)}")
        kernel = kernel * weights.to(kernel.dtype)[:, None]
    density = kernel.sum(dim=0)
    return density / density.sum().clamp_min(_MIN_MASS)


def kl_divergence(p: torch.Tensor, q: torch.Tensor, eps: float) -> torch.Tensor:
    """KL(p || q) = sum_g p_g (log(p_g + eps) - log(q_g + eps)) in nats (ICD-Face, ICCV 2023).

    ``p``, ``q`` [..., G] discrete distributions on the same grid (the last axis); ``eps`` keeps the logs
    finite. Returns [...]: a scalar for [G] inputs.
    """
    if p.shape != q.shape:
        raise ValueError(f"kl_divergence: p {tuple(p.shape)} and q {tuple(q.shape)} must have the same shape")
    return (p * (torch.log(p + eps) - torch.log(q + eps))).sum(dim=-1)


def _check_pair_sims(name: str, student_sims: torch.Tensor, teacher_sims: torch.Tensor, direction: str) -> None:
    """The KL direction is a known one and student and teacher sims are [P] of equal shape, else an error."""
    check_choice(direction, KL_DIRECTIONS, "icd.kl_direction")
    if student_sims.shape != teacher_sims.shape or student_sims.dim() != 1:
        raise ValueError(f"{name}: expected student and teacher sims [P] of equal shape, got "
                         f"{tuple(student_sims.shape)} and {tuple(teacher_sims.shape)}")


def _directed_kl(p_student: torch.Tensor, p_teacher: torch.Tensor, eps: float, direction: str) -> torch.Tensor:
    """KL(P_t || P_s) for "teacher_student", KL(P_s || P_t) for "student_teacher" (`icd.kl_direction`)."""
    if direction == "teacher_student":
        return kl_divergence(p_teacher, p_student, eps)
    return kl_divergence(p_student, p_teacher, eps)


def similarity_distribution_consistency(
    student_sims: torch.Tensor,
    teacher_sims: torch.Tensor,
    grid: torch.Tensor,
    sigma: float,
    eps: float,
    direction: str = "teacher_student",
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """L_sdc: KL between the teacher's and the student's positive-pair similarity distributions (ICD-Face, ICCV 2023).

    ``student_sims`` [P] and ``teacher_sims`` [P] are cosine similarities of the same positive pairs,
    ``grid`` [G] from ``similarity_grid``, ``sigma`` the KDE bandwidth, ``eps`` the KL epsilon,
    ``weights`` [P] optional pair weights/mask applied to both sides. The teacher side is detached.
    ``direction`` "teacher_student" = KL(P_t || P_s), "student_teacher" = KL(P_s || P_t).
    Returns a float32 scalar in nats; 0 (graph kept) when there are no pairs.
    """
    _check_pair_sims("similarity_distribution_consistency", student_sims, teacher_sims, direction)
    if student_sims.numel() == 0:
        return student_sims.to(torch.promote_types(student_sims.dtype, torch.float32)).sum() * 0.0
    p_student = kernel_density(student_sims, grid, sigma, weights)
    p_teacher = kernel_density(teacher_sims.detach(), grid, sigma, None if weights is None else weights.detach())
    return _directed_kl(p_student, p_teacher, eps, direction)


def identity_distribution_consistency(
    student_sims: torch.Tensor,
    teacher_sims: torch.Tensor,
    identities: torch.Tensor,
    grid: torch.Tensor,
    sigma: float,
    eps: float,
    direction: str = "teacher_student",
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """L_sdc per identity: the KL of `similarity_distribution_consistency` computed on each identity's
    pairs alone, averaged over the identities that have pairs (`icd.distribution = "per_identity"`).

    ICD-Face (Yu et al., ICCV 2023) pools a batch's positive pairs into one distribution per model; this
    variant keeps one per identity, so an identity's pairs are matched to its own teacher pairs rather
    than to the batch's. ``identities`` [P] int64 identity of each pair; other arguments as in
    `similarity_distribution_consistency`. Returns a float32 scalar in nats; 0 (graph kept) with no pairs.
    """
    _check_pair_sims("identity_distribution_consistency", student_sims, teacher_sims, direction)
    if identities.shape != student_sims.shape:
        raise ValueError(f"identity_distribution_consistency: identities {tuple(identities.shape)} must match the "
                         f"sims {tuple(student_sims.shape)}")
    if student_sims.numel() == 0:
        return student_sims.to(torch.promote_types(student_sims.dtype, torch.float32)).sum() * 0.0
    groups, index = torch.unique(identities, return_inverse=True)

    def densities(sims: torch.Tensor) -> torch.Tensor:  # [K, G], each identity's row sums to 1 (or 0: no mass)
        kernel = gaussian_kernel(sims, grid, sigma)
        if weights is not None:
            kernel = kernel * weights.detach().to(kernel.dtype)[:, None]
        rows = kernel.new_zeros(len(groups), grid.numel()).index_add(0, index, kernel)
        return rows / rows.sum(dim=1, keepdim=True).clamp_min(_MIN_MASS)

    p_s, p_t = densities(student_sims), densities(teacher_sims.detach())
    kl = _directed_kl(p_s, p_t, eps, direction)  # [K]
    has_mass = (p_t.sum(dim=1) > 0).to(kl.dtype)
    return (kl * has_mass).sum() / has_mass.sum().clamp_min(1.0)
