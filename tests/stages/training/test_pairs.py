"""`positive_pairs`: the step's same-identity pairs against naive loops over the batch and the bank."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from stages.training.bank import FeatureBank
from stages.training.pairs import positive_pairs


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
    pairs = positive_pairs(emb, targets, labels, rows, None, provider, step=0, in_batch=True, use_bank=True)
    naive_s, naive_t = [], []
    for i in range(8):
        for j in range(i + 1, 8):
            if labels[i] == labels[j] and rows[i] != rows[j]:
                naive_s.append(float(emb[i] @ emb[j]))
                naive_t.append(float(targets[i] @ targets[j]))
    assert pairs.in_batch == len(naive_s) == 4  # (0,1), (2,3), (2,4), (5,6); never row 3 with itself
    assert torch.allclose(pairs.student, torch.tensor(naive_s)) and torch.allclose(pairs.teacher, torch.tensor(naive_t))


def test_bank_pairs_use_cached_teacher_views_of_bank_rows() -> None:
    rows, labels, flips, emb, table = _setup()
    provider = TableTargets(table)
    bank = FeatureBank(4, slots=3, dim=6, max_age=5)
    old_rows, old_flips = torch.tensor([8, 1, 9]), torch.tensor([1, 0, 0])
    old_labels, old_emb = torch.tensor([0, 0, 2]), F.normalize(torch.randn(3, 6), dim=1)
    bank.update(old_labels, old_rows, old_flips, old_emb, step=1)
    targets = table[rows, flips]
    pairs = positive_pairs(emb, targets, labels, rows, bank, provider, step=3, in_batch=False)
    naive_s, naive_t = [], []
    for i in range(8):
        for k in range(3):
            if old_labels[k] == labels[i] and old_rows[k] != rows[i]:
                naive_s.append(float(emb[i] @ old_emb[k]))
                naive_t.append(float(targets[i] @ table[old_rows[k], old_flips[k]]))
    assert pairs.in_batch == 0 and len(pairs.student) == len(naive_s) == 5  # row 1 never meets its own copy
    assert torch.allclose(pairs.student, torch.tensor(naive_s)) and torch.allclose(pairs.teacher, torch.tensor(naive_t))
    expired = positive_pairs(emb, targets, labels, rows, bank, provider, step=7, in_batch=False)
    assert len(expired.student) == 0  # written at step 1, max_age 5
    both = positive_pairs(emb, targets, labels, rows, bank, provider, step=3)
    assert both.in_batch == 4 and len(both.student) == 9
