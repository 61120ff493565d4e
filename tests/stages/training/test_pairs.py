"""`positive_pairs`: the step's same-identity pairs against naive loops over the batch and the bank."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stages.training.bank import FeatureBank
from stages.training.pairs import distinct_pair_weights, positive_pairs


class TableTargets:
    """Teacher targets from a [N, 2, D] table, as `CacheTargets` gives them from the cache."""

    def __init__(self, table: torch.Tensor) -> None:
        self.table = table
        self.embedding_size = table.shape[-1]

    def batch_targets(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.table[batch["rows"], batch["flips"]]

    def lookup(self, rows: np.ndarray, flips: np.ndarray) -> torch.Tensor:
        return self.table[torch.from_numpy(rows), torch.from_numpy(flips.astype(np.int64))]


def _setup() -> tuple[torch.Tensor, ...]:
    torch.manual_seed(0)
    rows = torch.tensor([0, 1, 2, 3, 3, 5, 6, 7])  # row 3 twice (a short identity's repeat)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3])
    flips = torch.tensor([0, 1, 0, 1, 0, 0, 1, 1])
    emb = F.normalize(torch.randn(8, 6), dim=1)
    table = F.normalize(torch.randn(10, 2, 5), dim=-1)
    return rows, labels, flips, emb, table


def test_in_batch_pairs_equal_naive_loop() -> None:
    rows, labels, flips, emb, table = _setup()
    provider = TableTargets(table)
    targets = table[rows, flips]
    pairs = positive_pairs(emb, targets, labels, rows, None, provider, step=0, sources="both")
    naive_s, naive_t, keys = [], [], []
    for i in range(8):
        for j in range(i + 1, 8):
            if labels[i] == labels[j] and rows[i] != rows[j]:
                naive_s.append(float(emb[i] @ emb[j]))
                naive_t.append(float(targets[i] @ targets[j]))
                keys.append(frozenset((int(rows[i]), int(rows[j]))))
    assert pairs.in_batch == len(naive_s) == 4  # (0,1), (2,3), (2,4), (5,6); never row 3 with itself
    assert torch.allclose(pairs.student, torch.tensor(naive_s)) and torch.allclose(pairs.teacher, torch.tensor(naive_t))
    assert pairs.weights.tolist() == [1 / keys.count(k) for k in keys] == [1.0, 0.5, 0.5, 1.0]  # rows 2-3 twice


def test_bank_pairs_use_cached_teacher_views_of_bank_rows() -> None:
    rows, labels, flips, emb, table = _setup()
    provider = TableTargets(table)
    bank = FeatureBank(4, slots=3, dim=6, max_age=5)
    old_rows, old_flips = torch.tensor([8, 1, 9]), torch.tensor([1, 0, 0])
    old_labels, old_emb = torch.tensor([0, 0, 2]), F.normalize(torch.randn(3, 6), dim=1)
    bank.update(old_labels, old_rows, old_flips, old_emb, step=1)
    targets = table[rows, flips]
    pairs = positive_pairs(emb, targets, labels, rows, bank, provider, step=3, sources="bank")
    naive_s, naive_t = [], []
    for i in range(8):
        for k in range(3):
            if old_labels[k] == labels[i] and old_rows[k] != rows[i]:
                naive_s.append(float(emb[i] @ old_emb[k]))
                naive_t.append(float(targets[i] @ table[old_rows[k], old_flips[k]]))
    assert pairs.in_batch == 0 and len(pairs.student) == len(naive_s) == 5  # row 1 never meets its own copy
    assert torch.allclose(pairs.student, torch.tensor(naive_s)) and torch.allclose(pairs.teacher, torch.tensor(naive_t))
    expired = positive_pairs(emb, targets, labels, rows, bank, provider, step=7, sources="bank")
    assert len(expired.student) == 0  # written at step 1, max_age 5
    both = positive_pairs(emb, targets, labels, rows, bank, provider, step=3)
    assert both.in_batch == 4 and len(both.student) == 9
    batch_only = positive_pairs(emb, targets, labels, rows, bank, provider, step=3, sources="batch")
    assert batch_only.in_batch == len(batch_only.student) == 4


def _naive_weights(rows: list[int], labels: list[int], bank_rows: list[int], bank_labels: list[int],
                   in_batch: bool = True) -> list[float]:
    """Reference: in-batch pairs (i < j), then (anchor, bank slot) pairs, weighted 1 / copies of the image pair."""
    keys = []
    for i in range(len(rows) if in_batch else 0):
        for j in range(i + 1, len(rows)):
            if labels[i] == labels[j] and rows[i] != rows[j]:
                keys.append(frozenset((rows[i], rows[j])))
    for i in range(len(rows)):
        for k in range(len(bank_rows)):
            if bank_labels[k] == labels[i] and bank_rows[k] != rows[i]:
                keys.append(frozenset((rows[i], bank_rows[k])))
    return [1.0 / keys.count(key) for key in keys]


def test_each_distinct_image_pair_is_weighted_once_in_batch_and_bank() -> None:
    # identity 0 has two images, so the sampler fills its group of M = 4 as [10, 11, 10, 11]: one pair, four copies
    rows = torch.tensor([10, 11, 10, 11, 20, 21, 22, 23])
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    flips = torch.tensor([0, 1, 1, 0, 0, 1, 0, 1])
    torch.manual_seed(1)
    emb = F.normalize(torch.randn(8, 6), dim=1)
    table = F.normalize(torch.randn(30, 2, 5), dim=-1)
    provider, targets = TableTargets(table), table[rows, flips]
    bank = FeatureBank(2, slots=4, dim=6, max_age=5)
    bank_rows, bank_labels = [11, 10, 11, 24], [0, 0, 0, 1]  # row 11 in two slots
    bank.update(torch.tensor(bank_labels), torch.tensor(bank_rows), torch.tensor([0, 1, 1, 0]),
                F.normalize(torch.randn(4, 6), dim=1), step=1)
    in_batch = positive_pairs(emb, targets, labels, rows, bank, provider, step=2, sources="batch")
    assert in_batch.weights[:4].sum().item() == pytest.approx(1.0)  # the short identity's pair counts once, not 4x
    assert in_batch.weights.sum().item() == pytest.approx(1 + 6)  # distinct image pairs: {10, 11} and identity 1's six
    both = positive_pairs(emb, targets, labels, rows, bank, provider, step=2, sources="both")
    want = _naive_weights(rows.tolist(), labels.tolist(), bank_rows, bank_labels)
    assert len(both.weights) == len(want) == 16 + 4
    assert torch.allclose(both.weights, torch.tensor(want))
    assert both.weights.sum().item() == pytest.approx(1 + 6 + 4)  # bank copies of {10, 11} add nothing; row 24: 4
    bank_only = positive_pairs(emb, targets, labels, rows, bank, provider, step=2, sources="bank")
    want = _naive_weights(rows.tolist(), labels.tolist(), bank_rows, bank_labels, in_batch=False)
    assert torch.allclose(bank_only.weights, torch.tensor(want))
    assert bank_only.weights.sum().item() == pytest.approx(1 + 4)


def test_distinct_pair_weights_ignore_pair_order() -> None:
    w = distinct_pair_weights(torch.tensor([3, 5, 7, 3]), torch.tensor([5, 3, 9, 4]))
    assert w.tolist() == [0.5, 0.5, 1.0, 1.0]
    assert distinct_pair_weights(torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)).numel() == 0
