"""`report.md` of the demo: per-model table, student-vs-student differences with intervals, seed
aggregates, the preset it ran with, and plots."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.atomic import atomic_write_text
from config import PipelineConfig
from evaluation.compare import mean_std, verdict
from evaluation.plots import plot_roc, plot_similarity_histograms
from models.size import count_text as _count
from stages.demo.results import ModelResult

METRIC_NAMES = {"auc": "AUC", "tar@1e-2": "TAR@FAR=1e-2", "tar@1e-3": "TAR@FAR=1e-3", "tar@1e-4": "TAR@FAR=1e-4"}


def _fmt(v: float | None, digits: int = 4) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _train_gap(r: ModelResult) -> float | None:
    return r.compactness["gap"].get("intra_mean") if r.compactness else None


def header(cfg: PipelineConfig, sampled: dict[str, Any], all_pairs: dict[str, Any],
           preset: dict[str, Any]) -> list[str]:
    syn = cfg.data.synthetic
    return [
        "# ICD-Face demo report", "",
        f"Synthetic data: {syn.identities} training identities x {syn.images_per_identity} images, "
        f"{cfg.data.image_size}x{cfg.data.image_size}, difficulty {syn.difficulty}; held-out: "
        f"{syn.heldout_identities} disjoint identities x {syn.heldout_images_per_identity} images. Teacher "
        f"{cfg.teacher.arch} ({cfg.teacher.embedding_size}-d); students {cfg.student.arch} "
        f"({cfg.student.embedding_size}-d), identical budget.", "",
        "Demo preset (`[demo]`, applied over the other sections): "
        + ", ".join(f"`{k} = {v!r}`" for k, v in preset.items())
        + f"; teacher budget {cfg.demo.teacher_epochs} epochs at lr {cfg.demo.teacher_lr}; seeds {cfg.demo.seeds}.", "",
        f"Accuracy: insightface 10-fold protocol on {sampled['pairs']} held-out pairs (`heldout/pairs.txt`). "
        f"AUC and TAR@FAR: all-vs-all held-out pairs (`heldout/heldout_all.txt`: {all_pairs['genuine_pairs']} "
        f"same-identity, {all_pairs['impostor_pairs']} different-identity pairs). intra: mean held-out same-identity "
        "cosine; the gaps are teacher minus student, on held-out identities and on the training set (to the "
        "cached teacher).", "",
        "| model | parameters | FLOPs per face | accuracy | AUC | TAR@FAR=1e-2 | TAR@FAR=1e-3 | TAR@FAR=1e-4 "
        "| intra (held-out) | intra gap (held-out) | intra gap (train) | train img/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]


def model_row(name: str, r: ModelResult, teacher_intra: float) -> str:
    acc, ev = r.sampled.record, r.all_pairs.record
    tar = ev["tar_at_far"]
    gap = None if name == "teacher" else teacher_intra - ev["intra_mean"]
    size = f"{_count(r.size.get('parameters'))} | {_count(r.size.get('flops'))}"
    return (f"| {name} | {size} | {acc['accuracy_mean']:.4f} ± {acc['accuracy_std']:.4f} | {_fmt(ev['auc'])} | "
            f"{_fmt(tar.get('1e-2'))} | {_fmt(tar.get('1e-3'))} | {_fmt(tar.get('1e-4'))} | {ev['intra_mean']:.4f} | "
            f"{_fmt(gap)} | {_fmt(_train_gap(r))} | {r.images_per_s:.0f} |")


def comparison_table(rows: list[dict[str, Any]]) -> list[str]:
    """Each student-vs-student difference b - a with its 95% paired-bootstrap interval and what it says."""
    if not rows:
        return []
    n_boot = rows[0]["n_boot"]
    lines = ["", f"Student vs student on the all-vs-all held-out pairs: b - a, 95% interval from a paired "
             f"bootstrap over held-out identities ({n_boot} resamples; an interval that excludes 0 is a "
             "difference the data shows).", "",
             "| a | b | metric | value of a | value of b | b - a | 95% interval | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['a']} | {row['b']} | {METRIC_NAMES.get(row['metric'], row['metric'])} | "
                     f"{_fmt(row['a_value'])} | {_fmt(row['b_value'])} | {_fmt(row['difference'], 4)} | "
                     f"[{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}] | {verdict(row)} |")
    return lines


def seed_table(cfg: PipelineConfig, results: dict[str, ModelResult], students: Sequence[str],
               teacher_intra: float) -> list[str]:
    lines = ["", f"Across seeds {cfg.demo.seeds} (mean ± std):", "",
             "| student | accuracy | AUC | TAR@FAR=1e-3 | intra gap (held-out) | intra gap (train) |",
             "|---|---|---|---|---|---|"]
    for name in students:
        rs = [results[f"seed{s}/{name}"] for s in cfg.demo.seeds]
        lines.append(
            f"| {name} | {mean_std([r.sampled.record['accuracy_mean'] for r in rs])} | "
            f"{mean_std([r.all_pairs.record['auc'] for r in rs])} | "
            f"{mean_std([r.all_pairs.record['tar_at_far'].get('1e-3') for r in rs])} | "
            f"{mean_std([teacher_intra - r.all_pairs.record['intra_mean'] for r in rs])} | "
            f"{mean_std([_train_gap(r) for r in rs])} |")
    return lines


def plots(root: Path, cfg: PipelineConfig, results: dict[str, ModelResult], students: Sequence[str]) -> list[str]:
    """ROC and held-out similarity plots (all-vs-all pairs) of the teacher and the first seed's students."""
    first = cfg.demo.seeds[0]
    shown = {"teacher": results["teacher"]} | {n: results[f"seed{first}/{n}"] for n in students}
    plot_roc({k: (v.all_pairs.fpr, v.all_pairs.tpr) for k, v in shown.items()}, root / "roc.png",
             "held-out identities, all-vs-all pairs")
    plot_similarity_histograms({k: (v.all_pairs.intra, v.all_pairs.inter) for k, v in shown.items()},
                               root / "heldout_similarity.png",
                               "held-out: same-identity (solid) vs different-identity (dashed) cosine")
    lines = ["", "![ROC](roc.png)", "", "![held-out similarity](heldout_similarity.png)", ""]
    for n in students:
        comp = results[f"seed{first}/{n}"].compactness
        if comp:
            lines += [f"![training similarity, {n}]({Path(comp['plot']).relative_to(root).as_posix()})", ""]
    return lines


SMOKE_TEST = ("**Smoke test (`demo --quick`): tiny models trained for a few steps on 16 x 16 faces. Its numbers "
              "mean nothing; `icdface demo` without --quick gives the real comparison.**")


def write_report(root: Path, cfg: PipelineConfig, results: dict[str, ModelResult], comparisons: list[dict[str, Any]],
                 preset: dict[str, Any], students: Sequence[str], quick: bool = False) -> Path:
    """`<root>/report.md` with its plots beside it (`students`: the recipe names; `quick`: a smoke test, said at
    the top); returns its path."""
    teacher = results["teacher"]
    teacher_intra = teacher.all_pairs.record["intra_mean"]
    lines = header(cfg, teacher.sampled.record, teacher.all_pairs.record, preset)
    if quick:
        lines = lines[:2] + [SMOKE_TEST, ""] + lines[2:]
    lines += [model_row(name, r, teacher_intra) for name, r in results.items()]
    lines += comparison_table(comparisons)
    if len(cfg.demo.seeds) > 1:
        lines += seed_table(cfg, results, students, teacher_intra)
    lines += plots(root, cfg, results, students)
    out = root / "report.md"
    atomic_write_text(out, "\n".join(lines) + "\n")
    return out
