"""Tests for losses/ against naive per-sample reference implementations written here independently."""
from __future__ import annotations

import math

import pytest
import torch

from common.errors import ConfigError
from losses import (
    MarginHead,
    combined_margin_logits,
    feature_consistency_loss,
    kernel_density,
    kl_divergence,
    margin_params,
    similarity_distribution_consistency,
    similarity_grid,
    weighted_sum,
)

ARC = (1.0, 0.5, 0.0)
COS = (1.0, 0.0, 0.35)


def ref_target(cos: float, m1: float, m2: float, m3: float) -> float:
    """Naive combined-margin target logit (unscaled) for one cosine."""
    if m1 == 1.0 and m2 > 0 and math.acos(cos) + m2 >= math.pi:
        return cos - math.sin(math.pi - m2) * m2 - m3
    angle = m1 * math.acos(cos) + m2
    if angle > math.pi:
        return -1.0 - (angle - math.pi) - m3
    return math.cos(angle) - m3


def ref_logits(cosine: list[list[float]], labels: list[int], s: float, m: tuple[float, float, float]):
    out = []
    for i, row in enumerate(cosine):
        out.append([s * (ref_target(c, *m) if j == labels[i] else c) for j, c in enumerate(row)])
    return out


def ref_logits_torch(cosine: torch.Tensor, labels: list[int], s: float, m: tuple[float, float, float]):
    """Per-element autograd reference via acos (valid for cos strictly inside (-1, 1))."""
    m1, m2, m3 = m
    rows = []
    for i in range(cosine.shape[0]):
        row = []
        for j in range(cosine.shape[1]):
            c = cosine[i, j]
            if j != labels[i]:
                row.append(s * c)
            elif m1 == 1.0 and m2 > 0 and math.acos(c.item()) + m2 >= math.pi:
                row.append(s * (c - math.sin(math.pi - m2) * m2 - m3))
            elif m1 * math.acos(c.item()) + m2 > math.pi:
                row.append(s * (-1.0 - (m1 * torch.acos(c) + m2 - math.pi) - m3))
            else:
                row.append(s * (torch.cos(m1 * torch.acos(c) + m2) - m3))
        rows.append(torch.stack(row))
    return torch.stack(rows)


@pytest.mark.parametrize("m", [ARC, COS, (1.0, 0.3, 0.2), (1.2, 0.1, 0.05)])
def test_margin_logits_and_grads_match_reference(m):
    gen = torch.Generator().manual_seed(0)
    cos = (torch.rand(6, 5, generator=gen, dtype=torch.float64) * 1.98 - 0.99)
    cos[0, 1] = -0.97  # theta + m2 > pi for ArcFace
    cos[1, 2] = 0.995
    labels = [1, 2, 0, 4, 3, 0]
    weights = torch.randn(6, 5, generator=gen, dtype=torch.float64)

    x = cos.clone().requires_grad_(True)
    got = combined_margin_logits(x, torch.tensor(labels), 64.0, *m)
    (got * weights).sum().backward()

    want_vals = torch.tensor(ref_logits(cos.tolist(), labels, 64.0, m), dtype=torch.float64)
    torch.testing.assert_close(got.detach(), want_vals, rtol=1e-9, atol=1e-9)

    y = cos.clone().requires_grad_(True)
    ref = ref_logits_torch(y, labels, 64.0, m)
    (ref * weights).sum().backward()
    torch.testing.assert_close(x.grad, y.grad, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("m", [ARC, COS, (1.0, 0.3, 0.2), (1.2, 0.1, 0.05)])
def test_margin_finite_at_cos_plus_minus_one(m, dtype):
    cos = torch.tensor([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.5], [0.2, 1.0, -1.0]], dtype=dtype, requires_grad=True)
    labels = torch.tensor([0, 0, 2])  # targets at cos = +1, -1, -1
    logits = combined_margin_logits(cos, labels, 64.0, *m)
    logits.sum().backward()
    assert torch.isfinite(logits).all()
    assert torch.isfinite(cos.grad).all()
    if m[0] == 1.0:
        assert logits[0, 0].item() == pytest.approx(64.0 * ref_target(1.0, *m), abs=1e-4)
        assert logits[1, 0].item() == pytest.approx(64.0 * ref_target(-1.0, *m), abs=1e-4)
    non_target = torch.ones_like(cos, dtype=torch.bool)
    non_target[[0, 1, 2], [0, 0, 2]] = False
    assert torch.all(cos.grad[non_target] == 64.0)


def test_arcface_fallback_beyond_pi():
    m2 = 0.5
    boundary = math.cos(math.pi - m2)
    cos = torch.tensor([[boundary - 0.05, 0.1], [-0.999, 0.0]], dtype=torch.float64, requires_grad=True)
    logits = combined_margin_logits(cos, torch.tensor([0, 0]), 64.0, *ARC)
    logits[:, 0].sum().backward()
    for i in range(2):
        c = cos[i, 0].item()
        assert logits[i, 0].item() == pytest.approx(64.0 * (c - math.sin(math.pi - m2) * m2))
    torch.testing.assert_close(cos.grad[:, 0], torch.full((2,), 64.0, dtype=torch.float64))


def test_arcface_logit_is_monotone_in_theta():
    cos = torch.linspace(-1.0, 1.0, 2001, dtype=torch.float64)[:, None]
    target = combined_margin_logits(cos, torch.zeros(2001, dtype=torch.long), 1.0, *ARC)[:, 0]
    assert torch.all(target[1:] >= target[:-1])


def test_margin_params():
    assert margin_params("arcface", 0.5) == (1.0, 0.5, 0.0)
    assert margin_params("cosface", 0.35) == (1.0, 0.0, 0.35)
    with pytest.raises(ConfigError, match="loss.head"):
        margin_params("sphereface", 1.0)


def ref_cross_entropy(emb: list[list[float]], weight: list[list[float]], labels: list[int], s: float, m) -> float:
    def unit(v):
        n = math.sqrt(sum(a * a for a in v))
        return [a / n for a in v]

    ws = [unit(w) for w in weight]
    total = 0.0
    for e, y in zip(emb, labels):
        e = unit(e)
        cosines = [sum(a * b for a, b in zip(e, w)) for w in ws]
        z = [s * (ref_target(c, *m) if j == y else c) for j, c in enumerate(cosines)]
        top = max(z)
        lse = top + math.log(sum(math.exp(v - top) for v in z))
        total += lse - z[y]
    return total / len(emb)


@pytest.mark.parametrize("head,margin", [("arcface", 0.5), ("cosface", 0.35)])
def test_margin_head_matches_manual_cross_entropy(head, margin):
    torch.manual_seed(0)
    model = MarginHead(embedding_size=8, num_classes=5, head=head, scale=16.0, margin=margin)
    assert model.weight.shape == (5, 8)
    with torch.no_grad():
        model.weight.normal_()
    emb = torch.randn(7, 8, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 2])
    loss = model(emb, labels)
    want = ref_cross_entropy(emb.tolist(), model.weight.tolist(), labels.tolist(), 16.0, margin_params(head, margin))
    assert loss.item() == pytest.approx(want, rel=1e-5)
    assert model.logits(emb, labels).shape == (7, 5)
    loss.backward()
    assert torch.isfinite(emb.grad).all() and torch.isfinite(model.weight.grad).all()
    assert model.weight.grad.abs().sum() > 0


def test_margin_head_init_std():
    torch.manual_seed(0)
    model = MarginHead(64, 200)
    assert model.weight.std().item() == pytest.approx(0.01, rel=0.05)


def test_feature_consistency_matches_loop():
    torch.manual_seed(0)
    s = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    t = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    got = feature_consistency_loss(s, t)
    want = 0.0
    for si, ti in zip(s.tolist(), t.tolist()):
        ns = math.sqrt(sum(a * a for a in si))
        nt = math.sqrt(sum(a * a for a in ti))
        want += sum((a / ns - b / nt) ** 2 for a, b in zip(si, ti))
    assert got.item() == pytest.approx(want / 5, rel=1e-12)
    got.backward()
    assert s.grad is not None and t.grad is None
    assert feature_consistency_loss(t.detach(), t.detach() * 3.0).item() == pytest.approx(0.0, abs=1e-12)


def test_feature_consistency_empty_batch():
    s = torch.zeros(0, 4, requires_grad=True)
    loss = feature_consistency_loss(s, torch.zeros(0, 4))
    assert loss.item() == 0.0
    loss.backward()


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
    return sum(a * (math.log(a + eps) - math.log(b + eps)) for a, b in zip(p, q))


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


def test_weighted_sum():
    a = torch.tensor(2.0, requires_grad=True)
    b = torch.tensor(3.0, requires_grad=True)
    total = weighted_sum({"margin": a, "fcd": b}, {"margin": 1.0, "fcd": 0.5, "sdc": 7.0})
    assert total.item() == pytest.approx(3.5)
    total.backward()
    assert a.grad.item() == 1.0 and b.grad.item() == 0.5
    with pytest.raises(ValueError, match="sdc"):
        weighted_sum({"margin": a, "sdc": b}, {"margin": 1.0})
    with pytest.raises(ValueError):
        weighted_sum({}, {"margin": 1.0})
