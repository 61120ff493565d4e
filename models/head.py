"""Embedding head placed on top of a generic (timm) feature extractor."""
from __future__ import annotations

import torch
from torch import nn


class EmbeddingHead(nn.Module):
    """Dropout -> Linear -> BatchNorm1d, mapping pooled features [B, in_features] to [B, embedding_size].

    The output is not L2-normalised (losses and the cache normalise where they need to).
    """

    def __init__(self, in_features: int, embedding_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(in_features, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=1e-05)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: float [B, in_features] -> float [B, embedding_size]."""
        return self.features(self.fc(self.dropout(torch.flatten(x, 1))))
