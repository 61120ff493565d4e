"""`losses.margin_distillation`: teacher centres, per-sample margins and the ArcFace loss against naive loops."""
from __future__ import annotations

import math

import pytest
import torch

from losses import (
    arcface_target,
    class_margins,
    combined_margin_logits,
    margin_distillation_logits,
    margin_distillation_loss,
    teacher_class_centres,
)


def _unit(v: list[float]) -> list[float]:
    n = math.sqrt(sum(c * c for c in v))
    return [c / n for c in v] if n > 0 else [0.0 for _ in v]


def _dot(a: list[float], b: list[float]) -> float:
    return sum(p * q for p, q in zip(a, b, strict=True))


def ref_centres(emb: list[list[float]], labels: list[int], num_classes: int) -> list[list[float]]:
    out = []
    for c in range(num_classes):
        rows = [_unit(e) for e, y in zip(emb, labels, strict=True) if y == c]
        out.append(_unit([sum(col) for col in zip(*rows, strict=True)]) if rows else [0.0] * len(emb[0]))
    return out


def ref_margins(emb, labels, centres, m_min: float, m_max: float) -> list[float]:
    d = [_dot(_unit(e), _unit(centres[y])) for e, y in zip(emb, labels, strict=True)]
    top = max(d)
    return [m_min + (m_max - m_min) * min(max(v / top, 0.0), 1.0) if top > 0 else m_min for v in d]


def ref_loss(student, centres, labels, margins, scale: float) -> float:
    total = 0.0
    for s, y, m in zip(student, labels, margins, strict=True):
        logits = []
        for j, c in enumerate(centres):
            cos = _dot(_unit(s), _unit(c))
            logits.append(scale * (math.cos(math.acos(cos) + m) if j == y else cos))
        top = max(logits)
        total += -(logits[y] - top - math.log(sum(math.exp(v - top) for v in logits)))
    return total / len(labels)


def _data(seed: int = 0, classes: int = 4, per_class: int = 3, d: int = 6):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(per_class)
    proto = torch.randn(classes, d, generator=gen, dtype=torch.float64)
    teacher = (proto[labels] + 0.5 * torch.randn(len(labels), d, generator=gen, dtype=torch.float64)) * 3.0
    student = proto[labels] + 1.0 * torch.randn(len(labels), d, generator=gen, dtype=torch.float64)
    return student, teacher, labels


def test_teacher_class_centres_match_loop_and_empty_class_is_zero():
    _, teacher, labels = _data()
    got = teacher_class_centres(teacher, labels, 5)
    want = ref_centres(teacher.tolist(), labels.tolist(), 5)
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    assert torch.all(got[4] == 0)
    torch.testing.assert_close(got[:4].norm(dim=1), torch.ones(4, dtype=torch.float64))


def test_class_margins_match_loop_and_range():
    _, teacher, labels = _data()
    centres = teacher_class_centres(teacher, labels, 4)
    got = class_margins(teacher, labels, centres, 0.2, 0.5)
    want = ref_margins(teacher.tolist(), labels.tolist(), centres.tolist(), 0.2, 0.5)
    assert got.tolist() == pytest.approx(want, rel=1e-12)
    assert got.max().item() == pytest.approx(0.5) and got.min().item() >= 0.2
    assert len(set(round(v, 9) for v in got.tolist())) == len(got)  # one margin per sample
    mixed = torch.cat([-teacher[:1], teacher[1:3]])  # the first sample lies on the far side of its centre
    got_mixed = class_margins(mixed, labels[:3], centres)
    assert got_mixed[0].item() == pytest.approx(0.2) and got_mixed[1:].max().item() == pytest.approx(0.5)
    opposite = class_margins(-teacher[:2], labels[:2], centres)  # max closeness <= 0: all m_min
    assert opposite.tolist() == pytest.approx([0.2, 0.2])


def test_arcface_target_equals_house_combined_margin_for_a_constant_margin():
    cos = torch.linspace(-1.0, 1.0, 41, dtype=torch.float64)[:, None].repeat(1, 3)
    labels = torch.zeros(41, dtype=torch.long)
    house = combined_margin_logits(cos, labels, 1.0, 1.0, 0.35, 0.0)[:, 0]
    torch.testing.assert_close(arcface_target(cos[:, 0], torch.full((41,), 0.35, dtype=torch.float64)), house)


def test_loss_matches_reference():
    student, teacher, labels = _data(seed=1)
    centres = teacher_class_centres(teacher, labels, 4)
    margins = class_margins(teacher, labels, centres)
    got = margin_distillation_loss(student, centres, labels, margins, 64.0)
    want = ref_loss(student.tolist(), centres.tolist(), labels.tolist(), margins.tolist(), 64.0)
    assert got.item() == pytest.approx(want, rel=1e-9)
    swapped = margin_distillation_loss(student, centres, labels, margins.flip(0), 64.0)
    assert swapped.item() != pytest.approx(got.item(), rel=1e-6)  # margins are applied per sample, in order


def test_logits_off_target_are_plain_scaled_cosines_and_gradient_reaches_student_only():
    student, teacher, labels = _data(seed=2)
    centres = teacher_class_centres(teacher, labels, 4).requires_grad_(True)
    margins = class_margins(teacher, labels, centres)
    s = student.clone().requires_grad_(True)
    logits = margin_distillation_logits(s, centres, labels, margins, 64.0)
    cos = torch.nn.functional.normalize(student, dim=1) @ centres.detach().t()
    off = torch.ones_like(cos, dtype=torch.bool).scatter_(1, labels[:, None], False)
    torch.testing.assert_close(logits.detach()[off], 64.0 * cos[off])
    loss = torch.nn.functional.cross_entropy(logits, labels)
    assert torch.autograd.grad(loss, centres, retain_graph=True, allow_unused=True)[0] is None
    loss.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="margin_distillation_logits"):
        margin_distillation_logits(student, centres, labels, margins[:-1])
