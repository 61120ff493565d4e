"""`losses.rkd`: RKD distance and angle losses against naive per-pair / per-triplet loops."""
from __future__ import annotations

import math

import pytest
import torch

from losses import pairwise_distances, rkd_angle_loss, rkd_distance_loss, triplet_angles


def huber(x: float) -> float:
    return 0.5 * x * x if abs(x) < 1.0 else abs(x) - 0.5


def ref_distances(x: list[list[float]]) -> list[list[float]]:
    b = len(x)
    d = [[math.sqrt(sum((p - q) ** 2 for p, q in zip(x[i], x[j], strict=True))) for j in range(b)] for i in range(b)]
    mean = sum(d[i][j] for i in range(b) for j in range(b) if i != j) / (b * (b - 1))
    return [[v / mean for v in row] for row in d]


def ref_distance_loss(s: list[list[float]], t: list[list[float]]) -> float:
    ds, dt = ref_distances(s), ref_distances(t)
    b = len(s)
    return sum(huber(ds[i][j] - dt[i][j]) for i in range(b) for j in range(b)) / (b * b)


def ref_angle(x: list[list[float]], a: int, j: int, k: int) -> float:
    u = [p - q for p, q in zip(x[j], x[a], strict=True)]
    v = [p - q for p, q in zip(x[k], x[a], strict=True)]
    nu, nv = math.sqrt(sum(c * c for c in u)), math.sqrt(sum(c * c for c in v))
    if nu == 0.0 or nv == 0.0:
        return 0.0
    return sum(p * q for p, q in zip(u, v, strict=True)) / (nu * nv)


def ref_angle_loss(s: list[list[float]], t: list[list[float]]) -> float:
    b = len(s)
    total = 0.0
    for a in range(b):
        for j in range(b):
            for k in range(b):
                total += huber(ref_angle(s, a, j, k) - ref_angle(t, a, j, k))
    return total / b**3


def _batch(b: int = 6, ds: int = 5, dt: int = 9, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    teacher = torch.randn(b, dt, generator=gen, dtype=torch.float64)
    student = torch.randn(b, ds, generator=gen, dtype=torch.float64) * 3.0
    return student, teacher


def test_pairwise_distances_and_angles_match_loops():
    x, _ = _batch()
    want = [[math.dist(p, q) for q in x.tolist()] for p in x.tolist()]
    torch.testing.assert_close(pairwise_distances(x), torch.tensor(want, dtype=torch.float64), rtol=1e-9, atol=1e-6)
    angles = triplet_angles(x)
    for a, j, k in [(0, 1, 2), (3, 3, 1), (2, 4, 4), (5, 0, 3)]:
        assert angles[a, j, k].item() == pytest.approx(ref_angle(x.tolist(), a, j, k), abs=1e-12)


def test_distance_loss_matches_reference_with_different_dims():
    s, t = _batch()
    got = rkd_distance_loss(s, t)
    assert got.item() == pytest.approx(ref_distance_loss(s.tolist(), t.tolist()), rel=1e-9)
    # Large-gap case so both branches of the Huber loss are used.
    far = s.clone()
    far[0] += 40.0
    assert rkd_distance_loss(far, t).item() == pytest.approx(ref_distance_loss(far.tolist(), t.tolist()), rel=1e-9)


def test_angle_loss_matches_reference_with_different_dims():
    s, t = _batch(b=5)
    assert rkd_angle_loss(s, t).item() == pytest.approx(ref_angle_loss(s.tolist(), t.tolist()), rel=1e-9)


def test_losses_are_invariant_to_scale_and_zero_for_similar_relations():
    s, t = _batch()
    rotation = torch.linalg.qr(torch.randn(9, 9, generator=torch.Generator().manual_seed(3), dtype=torch.float64))[0]
    moved = 2.5 * t @ rotation + 1.0  # same relations up to scale
    assert rkd_distance_loss(moved, t).item() == pytest.approx(0.0, abs=1e-12)
    assert rkd_angle_loss(moved, t).item() == pytest.approx(0.0, abs=1e-12)
    assert rkd_distance_loss(s, t).item() > 1e-3 and rkd_angle_loss(s, t).item() > 1e-3


@pytest.mark.parametrize("loss_fn", [rkd_distance_loss, rkd_angle_loss])
def test_gradient_reaches_only_student_and_is_finite(loss_fn):
    s, t = _batch()
    s = s.clone().requires_grad_(True)
    t = t.clone().requires_grad_(True)
    loss = loss_fn(s, t)
    assert torch.autograd.grad(loss, t, retain_graph=True, allow_unused=True)[0] is None
    loss.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    with torch.no_grad():
        after = loss_fn(s - 0.01 * s.grad / s.grad.abs().max(), t)
    assert after.item() < loss.item()


@pytest.mark.parametrize("loss_fn, minimum", [(rkd_distance_loss, 2), (rkd_angle_loss, 3)])
def test_small_batches_are_zero_with_graph_and_shapes_checked(loss_fn, minimum):
    s = torch.randn(minimum - 1, 4, requires_grad=True)
    loss = loss_fn(s, torch.randn(minimum - 1, 7))
    assert loss.item() == 0.0 and loss.requires_grad
    with pytest.raises(ValueError, match="same B"):
        loss_fn(torch.randn(4, 3), torch.randn(5, 3))


def naive_triplet_angles(x: torch.Tensor) -> torch.Tensor:
    """The public code's form: every difference vector [B, B, D], normalised, then batched dot products."""
    diff = torch.nn.functional.normalize(x[None, :, :] - x[:, None, :], p=2, dim=2)
    return torch.bmm(diff, diff.transpose(1, 2))


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_angles_match_difference_vectors_with_repeated_rows(dtype, tol):
    gen = torch.Generator().manual_seed(5)
    x = torch.nn.functional.normalize(torch.randn(32, 64, generator=gen, dtype=dtype), dim=1)
    x[7] = x[3]  # a repeated row: its difference to row 3 is exactly zero, so those entries are 0
    x[20] = x[3]
    got = triplet_angles(x)
    assert got.dtype == dtype
    torch.testing.assert_close(got, naive_triplet_angles(x), rtol=0.0, atol=tol)
    assert got[3, 7, 20].item() == 0.0 and got[7, 3, 1].item() == 0.0
