"""Weighted total loss L = L_margin + w_fcd * L_fcd + w_sdc * L_sdc (ICD-Face, Yu et al., ICCV 2023)."""
from __future__ import annotations

import torch


def weighted_sum(terms: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """Sum of weights[name] * terms[name] over the names in ``terms`` (scalars; weights unitless).

    Weights for names absent from ``terms`` are ignored (e.g. SDC during warm-up); a term without a
    weight, or no terms at all, raises ValueError naming the problem.
    """
    if not terms:
        raise ValueError("weighted_sum: no loss terms given")
    missing = [name for name in terms if name not in weights]
    if missing:
        raise ValueError(f"weighted_sum: no weight for loss term(s) {missing} (weights given: {sorted(weights)})")
    names = list(terms)
    total = float(weights[names[0]]) * terms[names[0]]
    for name in names[1:]:
        total = total + float(weights[name]) * terms[name]
    return total
