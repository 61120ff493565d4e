"""Evaluation building blocks: pair sets, verification protocol, compactness statistics, plots.

`evaluation.plots` (matplotlib) is imported on demand so that the rest stays light.
"""
from evaluation.binfile import load_bin
from evaluation.compactness import (
    compactness_gap,
    inter_class_similarities,
    intra_class_similarities,
    similarity_stats,
)
from evaluation.pairs import PairSet, load_pair_set, read_lfw_pairs
from evaluation.protocol import roc_auc, roc_curve, summarize, tar_at_far, verify

__all__ = [
    "load_bin", "compactness_gap", "inter_class_similarities", "intra_class_similarities",
    "similarity_stats", "PairSet", "load_pair_set", "read_lfw_pairs", "roc_auc", "roc_curve",
    "summarize", "tar_at_far", "verify",
]
