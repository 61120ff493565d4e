"""`losses.total`: the weighted sum of loss terms."""
from __future__ import annotations

import pytest
import torch

from losses import weighted_sum


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
