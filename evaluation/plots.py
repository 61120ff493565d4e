"""PNG figures for evaluation reports: ROC curves and similarity histograms of several models.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, no global backend switch) and
written atomically.
"""
from __future__ import annotations

import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from common.atomic import atomic_path

_MIN_LOG_FPR = 1e-6


def _save(figure: Figure, path: str | os.PathLike[str]) -> None:
    FigureCanvasAgg(figure)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)


def plot_roc(
    curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike[str], title: str
) -> None:
    """ROC curves (TPR against FPR on a log axis), one line per name, with the AUC in the legend."""
    figure = Figure(figsize=(6, 5))
    axes = figure.add_subplot(1, 1, 1)
    lowest = 1.0
    for name, (fpr, tpr) in curves.items():
        fpr = np.asarray(fpr, dtype=np.float64)
        tpr = np.asarray(tpr, dtype=np.float64)
        auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)) if fpr.size > 1 else float("nan")
        positive = fpr > 0
        if np.any(positive):
            lowest = min(lowest, float(fpr[positive].min()))
        axes.plot(np.clip(fpr, _MIN_LOG_FPR, 1.0), tpr, label=f"{name} (AUC {auc:.4f})")
    axes.set_xscale("log")
    axes.set_xlim(max(lowest, _MIN_LOG_FPR), 1.0)
    axes.set_ylim(0.0, 1.01)
    axes.set_xlabel("false accept rate")
    axes.set_ylabel("true accept rate")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    if curves:
        axes.legend(loc="lower right")
    figure.tight_layout()
    _save(figure, path)


def plot_similarity_histograms(
    dists: dict[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike[str], title: str
) -> None:
    """Overlaid density histograms of intra-class (solid) and inter-class (dashed) similarities,
    one colour per model (e.g. teacher and students)."""
    figure = Figure(figsize=(7, 4.5))
    axes = figure.add_subplot(1, 1, 1)
    values = [np.asarray(v, dtype=np.float64).ravel() for pair in dists.values() for v in pair]
    values = [v for v in values if v.size]
    low = min((float(v.min()) for v in values), default=-1.0)
    high = max((float(v.max()) for v in values), default=1.0)
    if high <= low:
        low, high = low - 0.5, high + 0.5
    bins = np.linspace(low, high, 81).tolist()  # a list: matplotlib's stubs type `bins` as Sequence[float]
    colours = [f"C{k % 10}" for k in range(len(dists))]
    for colour, (label, (intra, inter)) in zip(colours, dists.items(), strict=True):
        for sample, style, kind in ((intra, "solid", "intra"), (inter, "dashed", "inter")):
            sample = np.asarray(sample, dtype=np.float64).ravel()
            if sample.size:
                axes.hist(sample, bins=bins, density=True, histtype="step", color=colour,
                          linestyle=style, linewidth=1.5, label=f"{label} {kind}")
    axes.set_xlabel("cosine similarity")
    axes.set_ylabel("density")
    axes.set_title(title)
    if values:
        axes.legend(loc="upper left", fontsize="small")
    figure.tight_layout()
    _save(figure, path)
