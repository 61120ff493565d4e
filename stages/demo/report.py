"""`report.md` of the demo: per-model table, seed aggregates, the preset it ran with, and plots."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from common.atomic import atomic_write_text
from config import PipelineConfig
from evaluation.plots import plot_roc, plot_similarity_histograms

if TYPE_CHECKING:
    from stages.demo.command import ModelResult



def _fmt(v: float | None, digits: int = 4) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _mean_std(values: list[float]) -> str:
    a = np.asarray(values, dtype=np.float64)
    return f"{a.mean():.4f} ± {a.std():.4f}" if len(a) > 1 else f"{a.mean():.4f}"


def _train_gap(r: ModelResult) -> float | None:
    return r.compactness["gap"].get("intra_mean") if r.compactness else None


def header(cfg: PipelineConfig, pairs: int, preset: dict[str, Any]) -> list[str]:
    syn = cfg.data.synthetic
    return [
        "# ICD-Face demo report", "",
        f"Synthetic data: {syn.identities} training identities x {syn.images_per_identity} images, "
        f"{cfg.data.image_size}x{cfg.data.image_size}, difficulty {syn.difficulty}; held-out: "
        f"{syn.heldout_identities} disjoint identities, {pairs} pairs (10 folds). Teacher {cfg.teacher.arch} "
        f"({cfg.teacher.embedding_size}-d); students {cfg.student.arch} ({cfg.student.embedding_size}-d), "
        "identical budget.", "",
        "Demo preset (`[demo]`, applied over the other sections): "
        + ", ".join(f"`{k} = {v!r}`" for k, v in preset.items())
        + f"; teacher budget {cfg.demo.teacher_epochs} epochs at lr {cfg.demo.teacher_lr}; seeds {cfg.demo.seeds}.", "",
        "Held-out verification (insightface protocol), held-out mean same-identity cosine (intra), its gap to the "
        "teacher, and the training-set intra-class gap to the cached teacher (teacher minus student).", "",
        "| model | accuracy | AUC | TAR@FAR=1e-2 | TAR@FAR=1e-3 | intra (held-out) "
        "| teacher - student intra (held-out) | teacher - student intra (train) | train img/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]


def model_row(name: str, r: ModelResult, teacher_intra: float) -> str:
    ev = r.held_out.record
    gap = None if name == "teacher" else teacher_intra - ev["intra_mean"]
    return (f"| {name} | {ev['accuracy_mean']:.4f} ± {ev['accuracy_std']:.4f} | {_fmt(ev['auc'])} | "
            f"{_fmt(ev['tar_at_far'].get('1e-2'))} | {_fmt(ev['tar_at_far'].get('1e-3'))} | {ev['intra_mean']:.4f} | "
            f"{_fmt(gap)} | {_fmt(_train_gap(r))} | {r.images_per_s:.0f} |")


def seed_table(cfg: PipelineConfig, results: dict[str, ModelResult], students: Sequence[str],
               teacher_intra: float) -> list[str]:
    lines = ["", f"Across seeds {cfg.demo.seeds} (mean ± std):", "",
             "| student | accuracy | AUC | teacher - student intra (held-out) | teacher - student intra (train) |",
             "|---|---|---|---|---|"]
    for name in students:
        rs = [results[f"seed{s}/{name}"] for s in cfg.demo.seeds]
        lines.append(
            f"| {name} | {_mean_std([r.held_out.record['accuracy_mean'] for r in rs])} | "
            f"{_mean_std([r.held_out.record['auc'] or 0.0 for r in rs])} | "
            f"{_mean_std([teacher_intra - r.held_out.record['intra_mean'] for r in rs])} | "
            f"{_mean_std([_train_gap(r) or 0.0 for r in rs])} |")
    return lines


def plots(root: Path, cfg: PipelineConfig, results: dict[str, ModelResult], students: Sequence[str]) -> list[str]:
    """ROC and held-out similarity plots of the teacher and the first seed's students, and their links."""
    first = cfg.demo.seeds[0]
    shown = {"teacher": results["teacher"]} | {n: results[f"seed{first}/{n}"] for n in students}
    plot_roc({k: (v.held_out.fpr, v.held_out.tpr) for k, v in shown.items()}, root / "roc.png", "held-out pairs")
    plot_similarity_histograms({k: (v.held_out.intra, v.held_out.inter) for k, v in shown.items()},
                               root / "heldout_similarity.png",
                               "held-out: same-identity (solid) vs different-identity (dashed) cosine")
    lines = ["", "![ROC](roc.png)", "", "![held-out similarity](heldout_similarity.png)", ""]
    for n in students:
        comp = results[f"seed{first}/{n}"].compactness
        if comp:
            lines += [f"![training similarity, {n}]({Path(comp['plot']).relative_to(root).as_posix()})", ""]
    return lines


def write_report(root: Path, cfg: PipelineConfig, results: dict[str, ModelResult], preset: dict[str, Any],
                 students: Sequence[str]) -> Path:
    """`<root>/report.md` with its plots beside it (`students`: the recipe names); returns its path."""
    teacher = results["teacher"].held_out.record
    lines = header(cfg, teacher["pairs"], preset)
    lines += [model_row(name, r, teacher["intra_mean"]) for name, r in results.items()]
    if len(cfg.demo.seeds) > 1:
        lines += seed_table(cfg, results, students, teacher["intra_mean"])
    lines += plots(root, cfg, results, students)
    out = root / "report.md"
    atomic_write_text(out, "\n".join(lines) + "\n")
    return out
