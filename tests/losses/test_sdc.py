"""`losses.sdc`: similarity grid, kernel density, KL and SDC against naive loops."""
from __future__ import annotations

import math

import pytest
import torch

from common.errors import ConfigError
from losses import (
    identity_distribution_consistency,
    kernel_density,
    kl_divergence,
    similarity_distribution_consistency,
    similarity_grid,
)


def test_similarity_grid():
    grid = similarity_grid(0.01)
    assert grid.shape == (201,)
    assert grid[0].item() == -1.0 and grid[-1].item() == 1.0
    torch.testing.assert_close(grid[1:] - grid[:-1], torch.full((200,), 0.01), rtol=0, atol=1e-6)
    assert similarity_grid(0.5).tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]
    with pytest.raises(ConfigError, match="icd.grid_step"):
        similarity_grid(0.0)


def ref_kde(sims: list[float], grid: list[float], sigma: float, weights: list[float] | None = None) -> list[float]:
    dens = []
    for g in grid:
        acc = 0.0
        for k, s in enumerate(sims):
            w = 1.0 if weights is None else weights[k]
            acc += w * math.exp(-((g - s) ** 2) / (2 * sigma * sigma))
        dens.append(acc)
    z = sum(dens)
    return [d / z for d in dens]


def ref_kl(p: list[float], q: list[float], eps: float) -> float:
    return sum(a * (math.log(a + eps) - math.log(b + eps)) for a, b in zip(p, q, strict=True))


def test_kernel_density_matches_double_loop():
    sims = torch.tensor([0.1, 0.5, 0.52, -0.3, 0.99], dtype=torch.float64)
    grid = similarity_grid(0.05).double()
    got = kernel_density(sims, grid, 0.1)
    torch.testing.assert_close(got, torch.tensor(ref_kde(sims.tolist(), grid.tolist(), 0.1), dtype=torch.float64))
    assert got.sum().item() == pytest.approx(1.0)
    w = [1.0, 0.0, 2.0, 1.0, 0.5]
    got_w = kernel_density(sims, grid, 0.1, torch.tensor(w, dtype=torch.float64))
    torch.testing.assert_close(got_w, torch.tensor(ref_kde(sims.tolist(), grid.tolist(), 0.1, w), dtype=torch.float64))


def test_kernel_density_no_mass_is_zero_not_nan():
    grid = similarity_grid(0.1)
    sims = torch.tensor([0.2, 0.4], requires_grad=True)
    dens = kernel_density(sims, grid, 0.1, torch.tensor([False, False]))
    assert torch.all(dens == 0)
    dens.sum().backward()
    assert torch.isfinite(sims.grad).all()
    assert torch.all(kernel_density(torch.zeros(0), grid, 0.1) == 0)


def test_kl_divergence_matches_loop():
    p = [0.1, 0.2, 0.0, 0.7]
    q = [0.25, 0.25, 0.25, 0.25]
    got = kl_divergence(torch.tensor(p, dtype=torch.float64), torch.tensor(q, dtype=torch.float64), 1e-10)
    assert got.item() == pytest.approx(ref_kl(p, q, 1e-10), rel=1e-12)


def _pair_sims():
    gen = torch.Generator().manual_seed(1)
    teacher = torch.rand(40, generator=gen, dtype=torch.float64) * 0.4 + 0.5
    student = torch.rand(40, generator=gen, dtype=torch.float64) * 0.5 + 0.1
    return student, teacher


def test_sdc_matches_reference_and_direction():
    student, teacher = _pair_sims()
    grid = similarity_grid(0.01).double()
    ps = ref_kde(student.tolist(), grid.tolist(), 0.1)
    pt = ref_kde(teacher.tolist(), grid.tolist(), 0.1)
    ts = similarity_distribution_consistency(student, teacher, grid, 0.1, 1e-10, "teacher_student")
    st = similarity_distribution_consistency(student, teacher, grid, 0.1, 1e-10, "student_teacher")
    assert ts.item() == pytest.approx(ref_kl(pt, ps, 1e-10), rel=1e-9)
    assert st.item() == pytest.approx(ref_kl(ps, pt, 1e-10), rel=1e-9)
    assert ts.item() != pytest.approx(st.item(), rel=1e-3)
    default = similarity_distribution_consistency(student, teacher, grid, 0.1, 1e-10)
    assert default.item() == ts.item()
    with pytest.raises(ConfigError, match="icd.kl_direction"):
        similarity_distribution_consistency(student, teacher, grid, 0.1, 1e-10, "both")


def test_sdc_zero_for_identical_positive_otherwise():
    student, teacher = _pair_sims()
    grid = similarity_grid(0.01)
    for direction in ("teacher_student", "student_teacher"):
        same = similarity_distribution_consistency(teacher, teacher.clone(), grid, 0.1, 1e-10, direction)
        assert same.item() == pytest.approx(0.0, abs=1e-9)
        assert similarity_distribution_consistency(student, teacher, grid, 0.1, 1e-10, direction).item() > 1e-3


def test_sdc_gradient_reaches_only_student():
    student, teacher = _pair_sims()
    s = student.clone().requires_grad_(True)
    t = teacher.clone().requires_grad_(True)
    loss = similarity_distribution_consistency(s, t, similarity_grid(0.01), 0.1, 1e-10)
    assert torch.autograd.grad(loss, t, retain_graph=True, allow_unused=True)[0] is None
    loss.backward()
    assert t.grad is None
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    # Gradient descent on the student sims moves the student distribution towards the teacher's.
    with torch.no_grad():
        moved = s - 0.5 * s.grad / s.grad.abs().max() * 0.05
    after = similarity_distribution_consistency(moved, teacher, similarity_grid(0.01), 0.1, 1e-10)
    assert after.item() < loss.item()


def test_sdc_weights_mask_pairs():
    student, teacher = _pair_sims()
    grid = similarity_grid(0.01)
    mask = torch.arange(40) % 3 != 0
    masked = similarity_distribution_consistency(student, teacher, grid, 0.1, 1e-10, weights=mask)
    dropped = similarity_distribution_consistency(student[mask], teacher[mask], grid, 0.1, 1e-10)
    assert masked.item() == pytest.approx(dropped.item(), rel=1e-6)


def test_sdc_without_pairs_is_zero_with_graph():
    s = torch.zeros(0, requires_grad=True)
    loss = similarity_distribution_consistency(s, torch.zeros(0), similarity_grid(0.01), 0.1, 1e-10)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    s2 = torch.tensor([0.3, 0.6], requires_grad=True)
    none_valid = torch.zeros(2, dtype=torch.bool)
    loss2 = similarity_distribution_consistency(s2, torch.tensor([0.5, 0.7]), similarity_grid(0.01), 0.1, 1e-10,
                                                weights=none_valid)
    assert loss2.item() == 0.0
    loss2.backward()
    assert torch.isfinite(s2.grad).all()


def _mass_ripple(step: float, sigma: float) -> float:
    """Relative spread of one kernel's mass on the grid as its centre moves across one step."""
    grid = similarity_grid(step).double()
    mass = [torch.exp(-(grid - c) ** 2 / (2 * sigma * sigma)).sum().item()
            for c in (0.3 + torch.linspace(0.0, step, 21, dtype=torch.float64))]
    return (max(mass) - min(mass)) / max(mass)


def test_below_one_grid_step_the_density_is_a_comb_and_sdc_goes_silent():
    """Why `config.choices.check_bandwidth` refuses icd.sigma < icd.grid_step (kernel_density's docstring)."""
    step = 0.01
    assert _mass_ripple(step, step) < 1e-5
    assert _mass_ripple(step, step / 4) > 0.5
    teacher = torch.tensor([0.355, 0.465, 0.575])
    for sigma, silent in ((step, False), (step / 30, True)):
        student = torch.tensor([0.305, 0.415, 0.525], requires_grad=True)  # midway between grid nodes
        loss = similarity_distribution_consistency(student, teacher, similarity_grid(step), sigma, 1e-10)
        loss.backward()
        assert student.grad is not None
        assert (loss.item() == 0.0 and student.grad.abs().sum().item() == 0.0) is silent


def test_per_identity_sdc_is_the_mean_of_each_identitys_own_kl():
    student, teacher = _pair_sims()
    ids = torch.tensor([7, 3, 3, 9] * 10)
    weights = [1.0, 0.5, 0.5, 1.0] * 10
    grid = similarity_grid(0.02).double()
    for direction in ("teacher_student", "student_teacher"):
        want = []
        for c in (3, 7, 9):
            ks = [k for k in range(40) if int(ids[k]) == c]
            ps = ref_kde([float(student[k]) for k in ks], grid.tolist(), 0.1, [weights[k] for k in ks])
            pt = ref_kde([float(teacher[k]) for k in ks], grid.tolist(), 0.1, [weights[k] for k in ks])
            want.append(ref_kl(pt, ps, 1e-10) if direction == "teacher_student" else ref_kl(ps, pt, 1e-10))
        got = identity_distribution_consistency(student, teacher, ids, grid, 0.1, 1e-10, direction,
                                                torch.tensor(weights, dtype=torch.float64))
        assert got.item() == pytest.approx(sum(want) / 3, rel=1e-9)
    pooled = similarity_distribution_consistency(student, teacher, grid, 0.1, 1e-10)
    assert identity_distribution_consistency(student, teacher, ids, grid, 0.1, 1e-10).item() != pytest.approx(
        pooled.item(), rel=1e-3)
    one = torch.zeros(40, dtype=torch.long)
    assert identity_distribution_consistency(student, teacher, one, grid, 0.1, 1e-10).item() == pytest.approx(
        pooled.item(), rel=1e-9)  # a single identity is the pooled distribution


def test_per_identity_sdc_ignores_identities_without_mass_and_keeps_the_graph():
    grid = similarity_grid(0.1)
    student = torch.tensor([0.2, 0.6, 0.1], requires_grad=True)
    teacher = torch.tensor([0.5, 0.5, 0.9])
    ids = torch.tensor([1, 1, 2])
    got = identity_distribution_consistency(student, teacher, ids, grid, 0.1, 1e-10,
                                            weights=torch.tensor([1.0, 1.0, 0.0]))
    only = identity_distribution_consistency(student[:2], teacher[:2], ids[:2], grid, 0.1, 1e-10)
    assert got.item() == pytest.approx(only.item(), rel=1e-6)
    got.backward()
    assert student.grad is not None and student.grad[2].item() == 0.0 and student.grad[0].item() != 0.0
    empty = identity_distribution_consistency(torch.zeros(0, requires_grad=True), torch.zeros(0),
                                              torch.zeros(0, dtype=torch.long), grid, 0.1, 1e-10)
    assert empty.item() == 0.0 and empty.requires_grad
