"""Partial FC's class sampling: which class centres one step scores.

Partial FC (An et al., "Killing Two Birds with One Stone: Efficient and Robust Training of Face
Recognition CNNs by Partial FC", CVPR 2022; insightface arcface_torch `partial_fc_v2.py`): each step
keeps every class present in the batch (the positives) plus uniformly drawn other classes, up to
`int(sample_rate * C)` centres in all, and computes the margin softmax over those centres only. When
the batch alone holds more classes than that, the step keeps exactly the batch's classes.
"""
from __future__ import annotations

import torch


def sample_size(num_classes: int, sample_rate: float) -> int:
    """Centres one step scores at `sample_rate` (0 < r <= 1) of `num_classes`: int(r * C), at least 1
    (arcface_torch's `num_sample`; the batch's classes are kept even when they are more)."""
    if not 0.0 < sample_rate <= 1.0:
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
    return max(1, int(sample_rate * num_classes))


def sample_centres(labels: torch.Tensor, num_classes: int, num_sample: int,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Sorted class indices [K] one step scores: the classes of `labels` plus uniformly drawn others.

    `labels` [B] int64 in 0..C-1 (C = `num_classes`). K = max(`num_sample`, number of distinct labels):
    every distinct label is kept (ranked above every random draw, as arcface_torch's `perm[positive] = 2`),
    the remaining K - positives are a uniform sample without replacement of the other classes
    (`torch.rand` ranks, top K). Returns int64 on `labels`' device, ascending, so a label's column in the
    sampled logits is `torch.searchsorted(index, label)`.
    """
    positives = torch.unique(labels)
    if positives.numel() >= num_sample:
        return positives
    device = labels.device if generator is None else generator.device
    rank = torch.rand(num_classes, generator=generator, device=device).to(labels.device)
    rank[positives] = 2.0
    return torch.topk(rank, num_sample, sorted=False).indices.sort().values


def remap_labels(labels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Each label's column [B] among the sampled centres `index` [K] (ascending; every label is in it)."""
    return torch.searchsorted(index, labels)
