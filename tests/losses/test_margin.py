"""`losses.margin`: combined-margin logits, gradients and MarginHead against naive per-sample references."""
from __future__ import annotations

import math

import pytest
import torch

from common.errors import ConfigError
from losses import MarginHead, combined_margin_logits, margin_params

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
    for e, y in zip(emb, labels, strict=True):
        e = unit(e)
        cosines = [sum(a * b for a, b in zip(e, w, strict=True)) for w in ws]
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
