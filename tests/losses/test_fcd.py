"""`losses.fcd`: feature consistency distillation against a per-sample loop."""
from __future__ import annotations

import math

import pytest
import torch

from losses import feature_consistency_loss


def test_feature_consistency_matches_loop():
    torch.manual_seed(0)
    s = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    t = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    got = feature_consistency_loss(s, t)
    want = 0.0
    for si, ti in zip(s.tolist(), t.tolist(), strict=True):
        ns = math.sqrt(sum(a * a for a in si))
        nt = math.sqrt(sum(a * a for a in ti))
        want += sum((a / ns - b / nt) ** 2 for a, b in zip(si, ti, strict=True))
    assert got.item() == pytest.approx(want / 5, rel=1e-12)
    got.backward()
    assert s.grad is not None and t.grad is None
    assert feature_consistency_loss(t.detach(), t.detach() * 3.0).item() == pytest.approx(0.0, abs=1e-12)


def test_feature_consistency_empty_batch():
    s = torch.zeros(0, 4, requires_grad=True)
    loss = feature_consistency_loss(s, torch.zeros(0, 4))
    assert loss.item() == 0.0
    loss.backward()
