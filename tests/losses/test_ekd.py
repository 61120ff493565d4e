"""`losses.ekd`: thresholds, soft ranks and the EKD loss against a naive per-pair reference."""
from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from losses import (
    EKD_FPRS,
    critical_pair_mask,
    ekd_loss,
    ekd_thresholds,
    ema_thresholds,
    fpr_thresholds,
    pair_similarities,
    soft_rank,
)


def _unit(v: list[float]) -> list[float]:
    n = math.sqrt(sum(c * c for c in v))
    return [c / n for c in v]


def ref_pairs(emb: list[list[float]], labels: list[int]) -> list[tuple[float, bool]]:
    e = [_unit(v) for v in emb]
    out = []
    for i in range(len(e)):
        for j in range(i + 1, len(e)):
            out.append((sum(p * q for p, q in zip(e[i], e[j], strict=True)), labels[i] == labels[j]))
    return out


def ref_thresholds(neg: list[float], fprs: list[float]) -> list[float]:
    ordered = sorted(neg, reverse=True)
    return [ordered[min(math.floor(len(neg) * Fraction(str(f))), len(neg) - 1)] for f in fprs]


def ref_rank(sim: float, thresholds: list[float], temp: float) -> float:
    return sum(1.0 / (1.0 + math.exp(-(sim - thr) / temp)) for thr in thresholds)


def ref_hard_rank(sim: float, thresholds: list[float]) -> int:
    return sum(1 for thr in thresholds if sim > thr)


def ref_term(pairs: list[tuple[float, float]], s_thr, t_thr, temp, critical_only) -> float:
    if critical_only:
        pairs = [(s, t) for s, t in pairs if ref_hard_rank(s, s_thr) != ref_hard_rank(t, t_thr)]
    if not pairs:
        return 0.0
    return sum((ref_rank(s, s_thr, temp) - ref_rank(t, t_thr, temp)) ** 2 for s, t in pairs) / len(pairs)


def ref_ekd(student, teacher, labels, fprs, temp, top_k, w_pos, w_neg, s_thr=None, t_thr=None, critical_only=False):
    ps, pt = ref_pairs(student, labels), ref_pairs(teacher, labels)
    pos = [(s, t) for (s, same), (t, _) in zip(ps, pt, strict=True) if same]
    neg = [(s, t) for (s, same), (t, _) in zip(ps, pt, strict=True) if not same]
    s_thr = ref_thresholds([s for s, _ in neg], fprs) if s_thr is None else s_thr
    t_thr = ref_thresholds([t for _, t in neg], fprs) if t_thr is None else t_thr
    hard = sorted(neg, key=lambda p: p[0], reverse=True)[:top_k]
    return (w_pos * ref_term(pos, s_thr, t_thr, temp, critical_only)
            + w_neg * ref_term(hard, s_thr, t_thr, temp, critical_only))


def _batch(ids: int = 4, per_id: int = 3, ds: int = 6, dt: int = 10, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(ids).repeat_interleave(per_id)
    centres_t = torch.randn(ids, dt, generator=gen, dtype=torch.float64)
    teacher = centres_t[labels] + 0.6 * torch.randn(len(labels), dt, generator=gen, dtype=torch.float64)
    centres_s = torch.randn(ids, ds, generator=gen, dtype=torch.float64)
    student = centres_s[labels] + 1.2 * torch.randn(len(labels), ds, generator=gen, dtype=torch.float64)
    return student, teacher, labels


def test_pair_similarities_split():
    s, _, labels = _batch()
    pos, neg = pair_similarities(s, labels)
    pairs = ref_pairs(s.tolist(), labels.tolist())
    assert pos.tolist() == pytest.approx([v for v, same in pairs if same], abs=1e-12)
    assert neg.tolist() == pytest.approx([v for v, same in pairs if not same], abs=1e-12)
    assert pos.numel() == 4 * 3 and neg.numel() == 66 - 12


def test_fpr_thresholds_pick_the_fpr_quantile():
    neg = torch.randperm(100, generator=torch.Generator().manual_seed(0)).double()  # 0..99 shuffled
    thr = fpr_thresholds(neg, [0.5, 0.1, 0.03, 1e-6])
    assert thr.tolist() == [49.0, 89.0, 96.0, 99.0]  # 50th, 10th, 3rd largest (0-based) and the maximum
    assert (neg > thr[1]).sum().item() == 10  # FPR 0.1 of the negatives lie above it
    assert fpr_thresholds(neg, [1.0]).item() == 0.0
    with pytest.raises(ValueError):
        fpr_thresholds(torch.zeros(0), [0.1])


def test_soft_rank_matches_loop():
    sims = torch.tensor([0.1, 0.35, 0.5], dtype=torch.float64)
    thr = torch.tensor([0.3, 0.4, 0.45], dtype=torch.float64)
    got = soft_rank(sims, thr, 0.05)
    assert got.tolist() == pytest.approx([ref_rank(v, thr.tolist(), 0.05) for v in sims.tolist()], rel=1e-12)


@pytest.mark.parametrize("fprs, top_k", [(EKD_FPRS, 2000), ((0.5, 0.2, 0.05), 2000), ((0.3, 0.1), 10)])
def test_ekd_loss_matches_reference(fprs, top_k):
    s, t, labels = _batch()
    got = ekd_loss(s, t, labels, fprs, 0.01, top_k, 0.02, 0.01)
    want = ref_ekd(s.tolist(), t.tolist(), labels.tolist(), list(fprs), 0.01, top_k, 0.02, 0.01)
    assert want > 1e-4
    assert got.item() == pytest.approx(want, rel=1e-9)


def test_ekd_loss_with_running_thresholds_and_critical_only():
    s, t, labels = _batch(seed=1)
    fprs = (0.3, 0.1, 0.02)
    s_thr = torch.tensor([0.05, 0.2, 0.4], dtype=torch.float64)
    t_thr = torch.tensor([0.1, 0.3, 0.5], dtype=torch.float64)
    for critical in (False, True):
        got = ekd_loss(s, t, labels, fprs, 0.05, 20, 0.02, 0.01, s_thr, t_thr, critical_only=critical)
        want = ref_ekd(s.tolist(), t.tolist(), labels.tolist(), list(fprs), 0.05, 20, 0.02, 0.01,
                       s_thr.tolist(), t_thr.tolist(), critical_only=critical)
        assert got.item() == pytest.approx(want, rel=1e-9)
    full = ekd_loss(s, t, labels, fprs, 0.05, 20, 0.02, 0.01, s_thr, t_thr)
    critical = ekd_loss(s, t, labels, fprs, 0.05, 20, 0.02, 0.01, s_thr, t_thr, critical_only=True)
    assert critical.item() != pytest.approx(full.item(), rel=1e-3)


def test_thresholds_helpers():
    s, t, labels = _batch()
    s_thr, t_thr = ekd_thresholds(s, t, labels, (0.5, 0.1))
    pairs_s, pairs_t = ref_pairs(s.tolist(), labels.tolist()), ref_pairs(t.tolist(), labels.tolist())
    assert s_thr.tolist() == pytest.approx(ref_thresholds([v for v, same in pairs_s if not same], [0.5, 0.1]))
    assert t_thr.tolist() == pytest.approx(ref_thresholds([v for v, same in pairs_t if not same], [0.5, 0.1]))
    running = ema_thresholds(torch.zeros(2, dtype=torch.float64), t_thr, 0.01)
    torch.testing.assert_close(running, 0.01 * t_thr)
    mask = critical_pair_mask(torch.tensor([0.2, 0.6]), torch.tensor([0.2, 0.2]), torch.tensor([0.1, 0.5]),
                              torch.tensor([0.1, 0.5]))
    assert mask.tolist() == [False, True]


def test_same_relations_give_zero_and_gradient_reaches_only_student():
    s, t, labels = _batch()
    embed = torch.linalg.qr(torch.randn(10, 10, generator=torch.Generator().manual_seed(2), dtype=torch.float64))[0]
    same_sims_teacher = torch.cat([s, torch.zeros(len(s), 4, dtype=s.dtype)], dim=1) @ embed  # D_t = 10 != D_s = 6
    assert ekd_loss(s, same_sims_teacher, labels).item() == pytest.approx(0.0, abs=1e-12)
    sv = s.clone().requires_grad_(True)
    tv = t.clone().requires_grad_(True)
    loss = ekd_loss(sv, tv, labels, (0.5, 0.2, 0.05), 0.05)
    assert torch.autograd.grad(loss, tv, retain_graph=True, allow_unused=True)[0] is None
    loss.backward()
    assert sv.grad is not None and torch.isfinite(sv.grad).all() and sv.grad.abs().sum() > 0


def test_no_positive_pairs_and_shape_errors():
    s, t, _ = _batch()
    distinct = torch.arange(len(s))
    got = ekd_loss(s, t, distinct, (0.5, 0.1), 0.05)
    want = ref_ekd(s.tolist(), t.tolist(), distinct.tolist(), [0.5, 0.1], 0.05, 2000, 0.02, 0.01)
    assert math.isfinite(got.item()) and got.item() == pytest.approx(want, rel=1e-9)
    with pytest.raises(ValueError, match="ekd_loss"):
        ekd_loss(s, t[:-1], distinct)
