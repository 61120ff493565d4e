"""`python cli.py demo`: the whole pipeline on the embedded synthetic default, and its report.

Held-out identities (disjoint from training) with two pair sets (`stages.demo.heldout`: 1,000 LFW-style
pairs for the 10-fold accuracy, and all-vs-all pairs for TAR down to FAR 1e-4); a teacher trained with
`train` on a larger backbone; `extract`; three students of one architecture and budget (`STUDENTS`:
no distillation, FCD only, FCD + ICD) for each seed in `demo.seeds`; `evaluate_sets` on both sets for
all of them; for each seed the student-vs-student differences (`CONTRASTS`) on the all-vs-all set with
95% paired-bootstrap intervals over identities; `report.md` with the tables and plots in the run
directory. Every step continues from what the run directory already holds (finished teacher, cache and
students are reused), so a killed demo picks up where it stopped and adding a seed trains only the new
students.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from config import PipelineConfig, derive, save_resolved
from evaluation.compare import compare_on_set
from evaluation.train_compactness import training_compactness
from models.device import resolve_device
from stages.demo.heldout import ALL_PAIRS, DEMO_FARS, HeldOut, evaluate_held_out, held_out_sets
from stages.demo.preset import demo_config, preset_changes
from stages.demo.report import write_report
from stages.demo.results import ModelResult
from stages.distill import run_distill
from stages.evaluate.embedders import build_embedder
from stages.extract import run_extract
from stages.train import run_train

log = logging.getLogger(__name__)

# student name -> (command, config changes): one architecture and budget, three recipes
STUDENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "no_kd": ("train", {}),
    "fcd": ("distill", {"loss.method": "icd", "loss.sdc_weight": 0.0}),
    "fcd_icd": ("distill", {"loss.method": "icd"}),
}
# (a, b): the differences b - a the report states, with their intervals, for every seed
CONTRASTS = (("no_kd", "fcd"), ("fcd", "fcd_icd"), ("no_kd", "fcd_icd"))


def contrasts(cfg: PipelineConfig, held: HeldOut, results: dict[str, ModelResult]) -> list[dict[str, Any]]:
    """For each seed, `CONTRASTS` on the all-vs-all set: b - a with a 95% paired bootstrap over identities;
    models are named `seed<s>/<student>`."""
    rows: list[dict[str, Any]] = []
    for seed in cfg.demo.seeds:
        pairs = [(f"seed{seed}/{a}", f"seed{seed}/{b}") for a, b in CONTRASTS]
        scores = {name: results[name].all_pairs.scores for pair in pairs for name in pair}
        rows += compare_on_set(ALL_PAIRS, held.all_pairs, scores, pairs, cfg.eval.n_boot, cfg.run.seed, DEMO_FARS)
    return rows


def timed(timings: dict[str, float], key: str, fn: Callable[[PipelineConfig], dict[str, Any]],
          cfg: PipelineConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    out = fn(cfg)
    timings[key] = time.perf_counter() - t0
    return out


def teacher_config(cfg: PipelineConfig, run_dir: Path, quick: bool) -> PipelineConfig:
    """`train` on the teacher's architecture with the demo's teacher budget."""
    return derive(cfg, {
        "run.dir": str(run_dir), "train.resume": "auto", "student.arch": cfg.teacher.arch,
        "student.embedding_size": cfg.teacher.embedding_size, "train.epochs": cfg.demo.teacher_epochs,
        "train.steps": cfg.train.steps if quick else 0, "train.lr": cfg.demo.teacher_lr,
        "train.random_share": cfg.demo.teacher_random_share,
    })


def train_student(base: PipelineConfig, name: str, seed: int, root: Path, timings: dict[str, float],
                  held: HeldOut, device: str) -> ModelResult:
    """Train (or reuse) one student of `STUDENTS` and evaluate it."""
    command, changes = STUDENTS[name]
    run_dir = root / f"seed{seed}" / name
    cfg = derive(base, {"run.dir": str(run_dir), "run.seed": seed, "eval.model": ["student"],
                        "train.resume": "auto", **changes})
    run = timed(timings, f"seed{seed}_{name}_s", run_train if command == "train" else run_distill, cfg)
    embedder, _ = build_embedder(cfg, "student", device)
    assert embedder is not None
    return ModelResult(evaluate_held_out(embedder, held, cfg.eval.batch_size, cfg.eval.nfolds), run["images_per_s"],
                       training_compactness(cfg, embedder, run_dir, name),
                       run["checkpoint"], embedder.size())


def run_demo(cfg: PipelineConfig, quick: bool = False) -> dict[str, Any]:
    """Teacher, cache, students and report in `run.dir`; returns the JSON summary."""
    start = time.perf_counter()
    root = Path(cfg.run.dir)
    root.mkdir(parents=True, exist_ok=True)
    cfg = demo_config(cfg, quick)
    if quick:
        log.warning("demo --quick is a smoke test: tiny models trained for %d steps on %d x %d faces; its numbers "
                    "mean nothing (run `demo` without --quick for the real comparison)", cfg.train.steps,
                    cfg.data.image_size, cfg.data.image_size)
    save_resolved(cfg, root)
    device = str(resolve_device(cfg.run.device))
    held = held_out_sets(cfg, root / "heldout")
    timings: dict[str, float] = {}

    teacher_dir = root / "teacher"
    teacher_run = timed(timings, "teacher_train_s", run_train, teacher_config(cfg, teacher_dir, quick))
    base = derive(cfg, {"teacher.weights": teacher_run["backbone"], "cache.path": str(root / "cache" / "teacher.h5")})
    save_resolved(base, root)  # `--config <run.dir>/config.toml`: the demo's teacher, cache and preset
    extract = timed(timings, "extract_s", run_extract, derive(base, {"run.dir": str(root / "cache")}))
    teacher_cfg = derive(base, {"eval.model": ["teacher"], "run.dir": str(teacher_dir)})
    teacher, _ = build_embedder(teacher_cfg, "teacher", device)
    assert teacher is not None
    results = {"teacher": ModelResult(evaluate_held_out(teacher, held, cfg.eval.batch_size, cfg.eval.nfolds),
                                      teacher_run["images_per_s"], size=teacher.size())}
    for seed in cfg.demo.seeds:
        for name in STUDENTS:
            results[f"seed{seed}/{name}"] = train_student(base, name, seed, root, timings, held, device)
    t0 = time.perf_counter()
    comparisons = contrasts(cfg, held, results)
    timings["bootstrap_s"] = time.perf_counter() - t0
    report = write_report(root, cfg, results, comparisons, preset_changes(cfg), list(STUDENTS), quick)
    return {
        "command": "demo", "report": str(report), "cache": extract["cache"], "teacher": teacher_run["backbone"],
        "pairs": str(held.sampled.source), "pairs_all": str(held.all_pairs.source),
        "seconds": round(time.perf_counter() - start, 1),
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "models": {k: v.public() for k, v in results.items()}, "comparisons": comparisons, "smoke_test": quick,
    }
