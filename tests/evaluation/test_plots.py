"""`evaluation.plots`: ROC and similarity-histogram PNGs are written, not blank, and show every series."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.colors import to_rgb
from PIL import Image

from evaluation.compactness import inter_class_similarities, intra_class_similarities
from evaluation.plots import plot_roc, plot_similarity_histograms
from evaluation.protocol import roc_curve
from tests.evaluation.test_compactness import _tiny_embeddings
from tests.evaluation.test_protocol import _scores_with_ties


def test_plots_write_png_files(tmp_path: Path) -> None:
    scores, issame = _scores_with_ties(200, seed=8)
    roc_path = tmp_path / "figs" / "roc.png"
    plot_roc({"teacher": roc_curve(scores, issame), "student": roc_curve(scores * 0.5 + 0.1, issame)},
             roc_path, "ROC")
    emb, labels = _tiny_embeddings()
    hist_path = tmp_path / "figs" / "sims.png"
    dists = {
        "teacher": (intra_class_similarities(emb, labels), inter_class_similarities(emb, labels)),
        "student": (intra_class_similarities(emb, labels) * 0.9, inter_class_similarities(emb, labels)),
    }
    plot_similarity_histograms(dists, hist_path, "similarities")
    for path in (roc_path, hist_path):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["roc.png", "sims.png"]


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def _count_near(pixels: np.ndarray, colour: str, tolerance: int = 30) -> int:
    """Pixels within `tolerance` (per channel, 0..255) of a matplotlib colour such as "C0"."""
    rgb = np.round(np.array(to_rgb(colour)) * 255).astype(np.int16)
    return int(np.all(np.abs(pixels - rgb) <= tolerance, axis=-1).sum())


def _assert_not_blank(pixels: np.ndarray) -> None:
    assert pixels.std() > 10
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50


def _roc_curves() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A strong and a weak ROC curve on one FPR grid (so the axis limits do not depend on which are drawn)."""
    fpr = np.concatenate([[0.0], np.logspace(-4, 0, 200)])
    return {"strong": (fpr, fpr ** 0.05), "weak": (fpr, fpr ** 0.8)}


def test_plot_roc_draws_every_curve(tmp_path: Path) -> None:
    curves = _roc_curves()
    plot_roc(curves, tmp_path / "both.png", "ROC")
    plot_roc({"strong": curves["strong"]}, tmp_path / "one.png", "ROC")
    both, one = _pixels(tmp_path / "both.png"), _pixels(tmp_path / "one.png")
    _assert_not_blank(both)
    _assert_not_blank(one)
    assert both.shape == one.shape
    assert np.any(both != one, axis=-1).sum() > 200
    assert _count_near(both, "C0") > 200 and _count_near(both, "C1") > 200
    assert _count_near(one, "C0") > 200 and _count_near(one, "C1") < 20


def _similarities() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(3)
    return {
        "teacher": (rng.normal(0.7, 0.05, 2000).clip(-1, 1), rng.normal(0.0, 0.1, 4000).clip(-1, 1)),
        "student": (rng.normal(0.35, 0.08, 2000).clip(-1, 1), rng.normal(0.15, 0.12, 4000).clip(-1, 1)),
    }


def test_plot_similarity_histograms_draws_every_model(tmp_path: Path) -> None:
    dists = _similarities()
    plot_similarity_histograms(dists, tmp_path / "both.png", "similarities")
    plot_similarity_histograms({"teacher": dists["teacher"]}, tmp_path / "one.png", "similarities")
    both, one = _pixels(tmp_path / "both.png"), _pixels(tmp_path / "one.png")
    _assert_not_blank(both)
    _assert_not_blank(one)
    assert both.shape == one.shape
    assert np.any(both != one, axis=-1).sum() > 200
    assert _count_near(both, "C0") > 200 and _count_near(both, "C1") > 200
    assert _count_near(one, "C0") > 200 and _count_near(one, "C1") < 20
