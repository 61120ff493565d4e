"""`stages.training.impostors`: in-batch different-identity pairs, against a naive loop."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stages.training.impostors import impostor_pairs


def test_impostor_pairs_match_a_naive_loop_and_count_each_image_pair_once() -> None:
    torch.manual_seed(0)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2, 0])
    rows = torch.tensor([10, 11, 20, 21, 30, 31, 30, 10])  # rows 30 and 10 repeat (a short identity's group)
    emb = F.normalize(torch.randn(8, 5), dim=1)
    targets = F.normalize(torch.randn(8, 7), dim=1)
    out = impostor_pairs(emb, targets, labels, rows)
    expected: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for i in range(8):
        for j in range(i + 1, 8):
            if labels[i] != labels[j]:
                key = (min(int(rows[i]), int(rows[j])), max(int(rows[i]), int(rows[j])))
                expected.setdefault(key, []).append((float(emb[i] @ emb[j]), float(targets[i] @ targets[j])))
    n_pairs = sum(len(v) for v in expected.values())
    assert out.student.shape == out.teacher.shape == out.weights.shape == (n_pairs,)
    got = sorted(zip(out.student.tolist(), out.teacher.tolist(), out.weights.tolist(), strict=True))
    want = sorted((s, t, 1.0 / len(v)) for v in expected.values() for s, t in v)
    for g, w in zip(got, want, strict=True):
        assert g == pytest.approx(w, abs=1e-6)
    assert abs(float(out.weights.sum()) - len(expected)) < 1e-5  # each distinct image pair weighs 1
