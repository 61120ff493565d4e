"""The paper's observation on training data: the student's intra-class similarity against the cached teacher's.

ICD-Face (Yu et al., ICCV 2023): after feature distillation alone the student's same-identity
similarities are lower than the teacher's. Measured on whole identities of the training set (view 0,
as stored), with the teacher side read from the stage-one cache.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from cache import TeacherCache, cache_file
from config import PipelineConfig
from evaluation.compactness import (
    compactness_gap,
    inter_class_similarities,
    intra_class_similarities,
    sample_rows,
    similarity_stats,
)
from evaluation.plots import plot_similarity_histograms
from evaluation.verify import MAX_INTER_PAIRS
from readers import build_dataset

ROWS = 2000  # training rows (whole identities) compared, by default


class Embeds(Protocol):
    """What the comparison needs of a model: uint8 RGB [B, H, W, 3] -> raw embeddings [B, D] (any
    `models.Embedder`, or `distill`'s student, which never becomes one)."""

    def embed(self, images: np.ndarray) -> torch.Tensor: ...


def training_compactness(cfg: PipelineConfig, embedder: Embeds, out_dir: Path, tag: str,
                         max_rows: int = ROWS) -> dict[str, Any] | None:
    """Student vs cached-teacher similarity statistics, their gap and a histogram plot; None without a cache."""
    path = cache_file(cfg.cache.path, cfg.run.dir)
    if not path.exists():
        return None
    dataset = build_dataset(cfg.data)
    with TeacherCache(path, in_ram="never") as cache:
        rows = sample_rows(cache.labels, cache.done, max_rows, cfg.run.seed)
        t_emb = cache.targets(rows, np.zeros_like(rows))
        labels = cache.labels[rows]
    images = np.stack([dataset.load(int(r)) for r in rows])
    s_emb = np.concatenate([F.normalize(embedder.embed(images[s:s + cfg.eval.batch_size]), dim=-1).numpy()
                            for s in range(0, len(images), cfg.eval.batch_size)])
    s_stats, t_stats = similarity_stats(s_emb, labels), similarity_stats(t_emb, labels)
    plot = out_dir / f"{tag}_train_similarity.png"
    plot_similarity_histograms({
        name: (intra_class_similarities(e, labels), inter_class_similarities(e, labels, MAX_INTER_PAIRS, 0))
        for name, e in (("teacher (cache)", t_emb), (tag, s_emb))
    }, plot, "training images: same-identity (solid) vs different-identity (dashed) cosine")
    return {"rows": int(len(rows)), "student": s_stats, "teacher": t_stats,
            "gap": compactness_gap(s_stats, t_stats), "plot": str(plot)}
