"""`python cli.py demo`: the whole pipeline on the embedded synthetic default, and its report.

Held-out identities (disjoint from training) with an LFW-style pair file; a teacher trained with
`train` on a larger backbone; `extract`; three students of one architecture and budget (no
distillation, FCD only, FCD + ICD) for each seed in `demo.seeds`; `evaluate` of all of them on the
held-out pairs; `report.md` with the table and plots in the run directory. Every step continues
from what the run directory already holds (finished teacher, cache and students are reused), so a
killed demo picks up where it stopped and adding a seed trains only the new students.
"""
from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from config import PipelineConfig, save_resolved, validate
from common.atomic import atomic_write_text
from readers.synthetic import SyntheticDataset, write_pair_set
from stages.distill import run_distill
from evaluation.compactness import inter_class_similarities, intra_class_similarities
from evaluation.pairs import load_pair_set
from evaluation.plots import plot_roc, plot_similarity_histograms
from evaluation.protocol import roc_curve, squared_l2_distance, summarize
from stages.evaluate.run import build_embedder, decode_set, fused_embeddings, training_compactness
from stages.extract import run_extract
from models.device import resolve_device
from stages.train import run_train

log = logging.getLogger(__name__)

STUDENTS = ("no_kd", "fcd", "fcd_icd")
QUICK = {
    "data.image_size": 16, "data.workers": 0,
    "data.synthetic.identities": 12, "data.synthetic.images_per_identity": 6,
    "data.synthetic.heldout_identities": 8, "data.synthetic.heldout_images_per_identity": 4,
    "data.synthetic.heldout_pairs": 40,
    "teacher.arch": "iresnet18", "teacher.embedding_size": 32, "teacher.batch_size": 32,
    "student.arch": "mobilefacenet", "student.embedding_size": 16,
    "train.batch_size": 16, "train.images_per_identity": 4, "train.steps": 4, "train.warmup_steps": 0,
    "train.log_every": 2, "train.checkpoint_every": 1000, "demo.teacher_epochs": 1.0,
}


def derive(cfg: PipelineConfig, **changes: Any) -> PipelineConfig:
    """A validated copy of `cfg` with `section__key=value` (or `section__sub__key`) changes."""
    out = copy.deepcopy(cfg)
    for dotted, value in changes.items():
        parts = dotted.split("__")
        obj = out
        for p in parts[:-1]:
            obj = getattr(obj, p)
        setattr(obj, parts[-1], value)
    validate(out)
    return out


def _apply(cfg: PipelineConfig, table: dict[str, Any]) -> PipelineConfig:
    return derive(cfg, **{k.replace(".", "__"): v for k, v in table.items()})


def _evaluate_model(cfg: PipelineConfig, pairs_file: Path, images: np.ndarray, device: str) -> dict[str, Any]:
    embedder, _ = build_embedder(cfg, device)
    assert embedder is not None
    pair_set = load_pair_set(pairs_file)
    emb = fused_embeddings(embedder, images, cfg.eval.batch_size)
    e1, e2 = emb[pair_set.idx1], emb[pair_set.idx2]
    record = summarize(e1, e2, pair_set.issame, nfolds=cfg.eval.nfolds, fars=(1e-2, 1e-3, 1e-4))
    assert pair_set.labels is not None
    intra = intra_class_similarities(emb, pair_set.labels)
    inter = inter_class_similarities(emb, pair_set.labels, 20000, 0)
    return {
        "accuracy_mean": record["accuracy_mean"], "accuracy_std": record["accuracy_std"], "auc": record["auc"],
        "tar_at_far": record["tar_at_far"], "pairs": record["pairs"],
        "intra_mean": float(intra.mean()), "inter_mean": float(inter.mean()),
        "_roc": roc_curve(-squared_l2_distance(e1, e2).astype(np.float64), pair_set.issame),
        "_dist": (intra, inter),
        "_embedder": embedder,
    }


def run_demo(cfg: PipelineConfig, quick: bool = False) -> dict[str, Any]:
    if quick:
        cfg = _apply(cfg, QUICK)
    start = time.perf_counter()
    root = Path(cfg.run.dir)
    root.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, root)
    cfg = derive(cfg, data__format="synthetic", data__root="")
    syn = cfg.data.synthetic
    device = str(resolve_device(cfg.run.device))

    heldout_dir = root / "heldout"
    pairs_file = heldout_dir / "pairs.txt"
    if not pairs_file.exists():
        heldout = SyntheticDataset(syn.heldout_identities, syn.heldout_images_per_identity, cfg.data.image_size,
                                   seed=syn.seed + 7919, difficulty=syn.difficulty)
        write_pair_set(heldout, heldout_dir, syn.heldout_pairs, seed=syn.seed)
    images = decode_set(load_pair_set(pairs_file), cfg.data.image_size)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    teacher_dir = root / "teacher"
    teacher_cfg = derive(cfg, run__dir=str(teacher_dir), train__resume="auto", student__arch=cfg.teacher.arch,
                         student__embedding_size=cfg.teacher.embedding_size, train__epochs=cfg.demo.teacher_epochs,
                         train__steps=0 if not quick else cfg.train.steps, train__lr=cfg.demo.teacher_lr)
    teacher_run = run_train(teacher_cfg)
    timings["teacher_train_s"] = time.perf_counter() - t0

    base = derive(cfg, teacher__weights=teacher_run["backbone"], cache__path=str(root / "cache" / "teacher.h5"))
    t0 = time.perf_counter()
    extract = run_extract(derive(base, run__dir=str(root / "cache")))
    timings["extract_s"] = time.perf_counter() - t0

    results: dict[str, Any] = {}
    teacher_eval = _evaluate_model(derive(base, eval__model="teacher", run__dir=str(teacher_dir)), pairs_file,
                                   images, device)
    results["teacher"] = {"eval": teacher_eval, "images_per_s": teacher_run["images_per_s"]}
    for seed in cfg.demo.seeds:
        for name in STUDENTS:
            run_dir = root / f"seed{seed}" / name
            scfg = derive(base, run__dir=str(run_dir), run__seed=seed, eval__model="student", train__resume="auto")
            t0 = time.perf_counter()
            if name == "no_kd":
                run = run_train(scfg)
            else:
                run = run_distill(derive(scfg, loss__sdc_weight=0.0) if name == "fcd" else scfg)
            timings[f"seed{seed}_{name}_s"] = time.perf_counter() - t0
            ev = _evaluate_model(scfg, pairs_file, images, device)
            comp = training_compactness(scfg, ev["_embedder"], 2000, run_dir, name)
            results[f"seed{seed}/{name}"] = {"eval": ev, "images_per_s": run["images_per_s"], "compactness": comp,
                                             "checkpoint": run["checkpoint"]}
    report = write_report(root, cfg, results, teacher_eval)
    summary = {
        "command": "demo",
        "report": str(report),
        "cache": extract["cache"],
        "teacher": teacher_run["backbone"],
        "pairs": str(pairs_file),
        "seconds": round(time.perf_counter() - start, 1),
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "models": {k: _public(v) for k, v in results.items()},
    }
    return summary


def _public(result: dict[str, Any]) -> dict[str, Any]:
    ev = {k: v for k, v in result["eval"].items() if not k.startswith("_")}
    out = {"eval": ev, "images_per_s": result["images_per_s"]}
    if result.get("compactness"):
        out["train_intra_gap"] = result["compactness"]["gap"]
    return out


def _fmt(v: float | None, digits: int = 4) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _mean_std(values: list[float]) -> str:
    a = np.asarray(values, dtype=np.float64)
    return f"{a.mean():.4f} ± {a.std():.4f}" if len(a) > 1 else f"{a.mean():.4f}"


def write_report(root: Path, cfg: PipelineConfig, results: dict[str, Any], teacher_eval: dict[str, Any]) -> Path:
    """`report.md`: per-model table, seed aggregates and plots (ROC, held-out and training similarity)."""
    t_intra = teacher_eval["intra_mean"]
    lines = [
        "# ICD-Face demo report", "",
        f"Synthetic data: {cfg.data.synthetic.identities} training identities x "
        f"{cfg.data.synthetic.images_per_identity} images, {cfg.data.image_size}x{cfg.data.image_size}, difficulty "
        f"{cfg.data.synthetic.difficulty}; held-out: {cfg.data.synthetic.heldout_identities} disjoint identities, "
        f"{teacher_eval['pairs']} pairs (10 folds). Teacher {cfg.teacher.arch} ({cfg.teacher.embedding_size}-d); "
        f"students {cfg.student.arch} ({cfg.student.embedding_size}-d), identical budget.", "",
        "Held-out verification (insightface protocol), held-out mean same-identity cosine (intra), its gap to the "
        "teacher, and the training-set intra-class gap to the cached teacher (teacher minus student).", "",
        "| model | accuracy | AUC | TAR@FAR=1e-2 | TAR@FAR=1e-3 | intra (held-out) "
        "| teacher - student intra (held-out) | teacher - student intra (train) | train img/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        ev = r["eval"]
        comp = r.get("compactness")
        train_gap = comp["gap"].get("intra_mean") if comp else None
        gap = None if name == "teacher" else t_intra - ev["intra_mean"]
        lines.append(f"| {name} | {ev['accuracy_mean']:.4f} ± {ev['accuracy_std']:.4f} | {_fmt(ev['auc'])} | "
                     f"{_fmt(ev['tar_at_far'].get('1e-2'))} | {_fmt(ev['tar_at_far'].get('1e-3'))} | {ev['intra_mean']:.4f} | {_fmt(gap)} | "
                     f"{_fmt(train_gap)} | {r['images_per_s']:.0f} |")
    if len(cfg.demo.seeds) > 1:
        lines += ["", f"Across seeds {cfg.demo.seeds} (mean ± std):", "",
                  "| student | accuracy | AUC | teacher - student intra (held-out) | teacher - student intra (train) |",
                  "|---|---|---|---|---|"]
        for name in STUDENTS:
            rs = [results[f"seed{s}/{name}"] for s in cfg.demo.seeds]
            lines.append(
                f"| {name} | {_mean_std([r['eval']['accuracy_mean'] for r in rs])} | "
                f"{_mean_std([r['eval']['auc'] or 0.0 for r in rs])} | "
                f"{_mean_std([t_intra - r['eval']['intra_mean'] for r in rs])} | "
                f"{_mean_std([(r['compactness'] or {}).get('gap', {}).get('intra_mean') or 0.0 for r in rs])} |")
    first = cfg.demo.seeds[0]
    shown = {"teacher": results["teacher"]} | {n: results[f"seed{first}/{n}"] for n in STUDENTS}
    plot_roc({k: v["eval"]["_roc"] for k, v in shown.items()}, root / "roc.png", "held-out pairs")
    plot_similarity_histograms({k: v["eval"]["_dist"] for k, v in shown.items()}, root / "heldout_similarity.png",
                               "held-out: same-identity (solid) vs different-identity (dashed) cosine")
    lines += ["", "![ROC](roc.png)", "", "![held-out similarity](heldout_similarity.png)", ""]
    for n in STUDENTS:
        comp = results[f"seed{first}/{n}"].get("compactness")
        if comp:
            rel = Path(comp["plot"]).relative_to(root)
            lines += [f"![training similarity, {n}]({rel.as_posix()})", ""]
    out = root / "report.md"
    atomic_write_text(out, "\n".join(lines) + "\n")
    return out
