"""`losses.adadistill`: adaptive alpha, teacher-centre update and AdaArc/AdaCos logits against naive loops."""
from __future__ import annotations

import math

import pytest
import torch

from losses import adadistill_alpha, adadistill_logits, adadistill_loss, teacher_centre_update


def _unit(v: list[float]) -> list[float]:
    n = math.sqrt(sum(c * c for c in v))
    return [c / n for c in v] if n > 0 else [0.0 for _ in v]


def _cos(a: list[float], b: list[float]) -> float:
    return sum(p * q for p, q in zip(_unit(a), _unit(b), strict=True))


def _clip(x: float, lo: float, hi: float) -> float:
    return min(max(x, lo), hi)


def ref_alpha(s: list[float], t: list[float], c: list[float], weighted: bool) -> float:
    a = _clip(_cos(s, t), -1.0, 1.0)
    if weighted:
        a *= _clip(_cos(c, t), 1e-6, 1.0)
    return _clip(a, 1e-6, 1.0)


def ref_update(centres: list[list[float]], student, teacher, labels: list[int], weighted: bool):
    """Per sample c_y' = alpha c_y + (1 - alpha) unit(t), from the pre-batch centre; mean over a class's samples."""
    proposals: dict[int, list[list[float]]] = {}
    for s, t, y in zip(student, teacher, labels, strict=True):
        a = ref_alpha(s, t, centres[y], weighted)
        proposals.setdefault(y, []).append([a * c + (1 - a) * u for c, u in zip(centres[y], _unit(t), strict=True)])
    new = [row[:] for row in centres]
    for y, rows in proposals.items():
        new[y] = [sum(col) / len(rows) for col in zip(*rows, strict=True)]
    return new


def ref_logits(student, centres, labels, scale: float, head: str, m: float):
    out = []
    for s, y in zip(student, labels, strict=True):
        row = []
        for j, c in enumerate(centres):
            cos = _cos(s, c)
            if j == y:
                cos = math.cos(math.acos(cos) + m) if head == "arcface" else cos - m
            row.append(scale * cos)
        out.append(row)
    return out


def ref_cross_entropy(logits: list[list[float]], labels: list[int]) -> float:
    total = 0.0
    for row, y in zip(logits, labels, strict=True):
        top = max(row)
        total += -(row[y] - top - math.log(sum(math.exp(v - top) for v in row)))
    return total / len(labels)


def _batch(seed: int = 0, b: int = 6, c: int = 4, d: int = 5):
    gen = torch.Generator().manual_seed(seed)
    teacher = torch.nn.functional.normalize(torch.randn(b, d, generator=gen, dtype=torch.float64), dim=1)
    student = teacher + 0.8 * torch.randn(b, d, generator=gen, dtype=torch.float64)
    centres = torch.randn(c, d, generator=gen, dtype=torch.float64)
    return student, teacher, centres


@pytest.mark.parametrize("weighted", [True, False])
def test_alpha_matches_loop_including_clips(weighted):
    student, teacher, centres = _batch()
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    student[2] = -teacher[2]  # disagreement: alpha clipped to 1e-6
    got = adadistill_alpha(student, teacher, centres[labels], weighted)
    want = [ref_alpha(s, t, centres[y].tolist(), weighted)
            for s, t, y in zip(student.tolist(), teacher.tolist(), labels.tolist(), strict=True)]
    assert got.tolist() == pytest.approx(want, rel=1e-12)
    assert got[2].item() == pytest.approx(1e-6)
    assert not got.requires_grad


@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("labels", [[0, 2, 3, 1, 5, 4], [0, 0, 2, 2, 2, 3]])
def test_centre_update_matches_loop(weighted, labels):
    student, teacher, _ = _batch(b=6)
    centres = torch.randn(7, 5, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    before = centres.clone()
    new, alpha = teacher_centre_update(centres, student, teacher, torch.tensor(labels), weighted)
    want = ref_update(centres.tolist(), student.tolist(), teacher.tolist(), labels, weighted)
    torch.testing.assert_close(new, torch.tensor(want, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    assert torch.equal(centres, before)  # pure: the input is not modified
    assert torch.equal(new[6], before[6])  # an unseen class keeps its centre
    assert alpha.shape == (6,)


def test_centre_update_extremes():
    _, teacher, _ = _batch()
    labels = torch.arange(6)
    new, alpha = teacher_centre_update(teacher.clone(), teacher, teacher, labels)  # full agreement: alpha 1
    torch.testing.assert_close(alpha, torch.ones(6, dtype=torch.float64))
    torch.testing.assert_close(new, teacher)
    new, _ = teacher_centre_update(torch.zeros(6, 5, dtype=torch.float64), teacher, teacher, labels)  # first visit
    torch.testing.assert_close(new, teacher, rtol=0, atol=1e-5)


@pytest.mark.parametrize("head, m", [("arcface", 0.45), ("cosface", 0.35)])
def test_logits_and_loss_match_reference(head, m):
    student, _, centres = _batch(seed=2)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    got = adadistill_logits(student, centres, labels, head, 64.0, m)
    want = ref_logits(student.tolist(), centres.tolist(), labels.tolist(), 64.0, head, m)
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=1e-9, atol=1e-9)
    loss = adadistill_loss(student, centres, labels, head, 64.0, m)
    assert loss.item() == pytest.approx(ref_cross_entropy(want, labels.tolist()), rel=1e-9)


def test_gradient_reaches_student_only():
    student, teacher, centres = _batch(seed=3)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    s = student.clone().requires_grad_(True)
    c = centres.clone().requires_grad_(True)
    new, _ = teacher_centre_update(c, s, teacher, labels)
    assert not new.requires_grad
    loss = adadistill_loss(s, c, labels)
    assert torch.autograd.grad(loss, c, retain_graph=True, allow_unused=True)[0] is None
    loss.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="adadistill_alpha"):
        adadistill_alpha(student[:, :3], teacher, centres[labels])
