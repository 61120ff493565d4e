"""`python cli.py demo`: the whole pipeline on the embedded synthetic default, and its report.

Held-out identities (disjoint from training) with an LFW-style pair file; a teacher trained with
`train` on a larger backbone; `extract`; three students of one architecture and budget (`STUDENTS`:
no distillation, FCD only, FCD + ICD) for each seed in `demo.seeds`; `evaluate_sets` on the held-out
pairs for all of them; `report.md` with the table and plots in the run directory. Every step
continues from what the run directory already holds (finished teacher, cache and students are
reused), so a killed demo picks up where it stopped and adding a seed trains only the new students.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from config import PipelineConfig, save_resolved
from evaluation.pairs import PairSet, load_pair_set
from evaluation.verify import SetResult, evaluate_sets
from models.device import resolve_device
from models.embedder import Embedder
from readers.synthetic import SyntheticDataset, write_pair_set
from stages.demo.preset import demo_config, derive, preset_changes
from stages.demo.report import write_report
from stages.distill import run_distill
from stages.evaluate.embedders import build_embedder
from stages.evaluate.train_compactness import training_compactness
from stages.extract import run_extract
from stages.train import run_train

# student name -> (command, config changes): one architecture and budget, three recipes
STUDENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "no_kd": ("train", {}),
    "fcd": ("distill", {"loss.sdc_weight": 0.0}),
    "fcd_icd": ("distill", {}),
}
DEMO_FARS = (1e-2, 1e-3, 1e-4)
HELDOUT_SEED_OFFSET = 7919  # the held-out identities come from another generator seed


@dataclass
class ModelResult:
    """One model of the demo: its held-out evaluation, training throughput and training-set compactness."""

    held_out: SetResult
    images_per_s: float
    compactness: dict[str, Any] | None = None
    checkpoint: str = ""

    def public(self) -> dict[str, Any]:
        """Its entry in the summary's `models`."""
        out: dict[str, Any] = {"eval": self.held_out.record, "images_per_s": self.images_per_s}
        if self.compactness:
            out["train_intra_gap"] = self.compactness["gap"]
        return out


def heldout_pairs(cfg: PipelineConfig, out_dir: Path) -> tuple[PairSet, np.ndarray]:
    """The held-out pair set (written once) and its decoded images."""
    syn = cfg.data.synthetic
    pairs_file = out_dir / "pairs.txt"
    if not pairs_file.exists():
        heldout = SyntheticDataset(syn.heldout_identities, syn.heldout_images_per_identity, cfg.data.image_size,
                                   seed=syn.seed + HELDOUT_SEED_OFFSET, difficulty=syn.difficulty)
        write_pair_set(heldout, out_dir, syn.heldout_pairs, seed=syn.seed)
    pair_set = load_pair_set(pairs_file)
    return pair_set, pair_set.decode(cfg.data.image_size)


def evaluate_held_out(embedder: Embedder, pair_set: PairSet, images: np.ndarray, cfg: PipelineConfig) -> SetResult:
    """`evaluate_sets` on the held-out pairs; the record gains the held-out intra/inter mean cosines."""
    result = next(iter(evaluate_sets([pair_set], lambda _: embedder.embed_fused(images, cfg.eval.batch_size),
                                     nfolds=cfg.eval.nfolds, fars=DEMO_FARS).values()))
    result.record.pop("similarity", None)
    result.record.update(intra_mean=float(result.intra.mean()), inter_mean=float(result.inter.mean()))
    return result


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
    })


def train_student(base: PipelineConfig, name: str, seed: int, root: Path, timings: dict[str, float],
                  pair_set: PairSet, images: np.ndarray, device: str) -> ModelResult:
    """Train (or reuse) one student of `STUDENTS` and evaluate it."""
    command, changes = STUDENTS[name]
    run_dir = root / f"seed{seed}" / name
    cfg = derive(base, {"run.dir": str(run_dir), "run.seed": seed, "eval.model": ["student"],
                        "train.resume": "auto", **changes})
    run = timed(timings, f"seed{seed}_{name}_s", run_train if command == "train" else run_distill, cfg)
    embedder, _ = build_embedder(cfg, "student", device)
    assert embedder is not None
    return ModelResult(evaluate_held_out(embedder, pair_set, images, cfg), run["images_per_s"],
                       training_compactness(cfg, embedder, run_dir, name),
                       run["checkpoint"])


def run_demo(cfg: PipelineConfig, quick: bool = False) -> dict[str, Any]:
    """Teacher, cache, students and report in `run.dir`; returns the JSON summary."""
    start = time.perf_counter()
    root = Path(cfg.run.dir)
    root.mkdir(parents=True, exist_ok=True)
    cfg = demo_config(cfg, quick)
    save_resolved(cfg, root)
    device = str(resolve_device(cfg.run.device))
    pair_set, images = heldout_pairs(cfg, root / "heldout")
    timings: dict[str, float] = {}

    teacher_dir = root / "teacher"
    teacher_run = timed(timings, "teacher_train_s", run_train, teacher_config(cfg, teacher_dir, quick))
    base = derive(cfg, {"teacher.weights": teacher_run["backbone"], "cache.path": str(root / "cache" / "teacher.h5")})
    save_resolved(base, root)  # `--config <run.dir>/config.toml`: the demo's teacher, cache and preset
    extract = timed(timings, "extract_s", run_extract, derive(base, {"run.dir": str(root / "cache")}))
    teacher_cfg = derive(base, {"eval.model": ["teacher"], "run.dir": str(teacher_dir)})
    teacher, _ = build_embedder(teacher_cfg, "teacher", device)
    assert teacher is not None
    results = {"teacher": ModelResult(evaluate_held_out(teacher, pair_set, images, teacher_cfg),
                                      teacher_run["images_per_s"])}
    for seed in cfg.demo.seeds:
        for name in STUDENTS:
            results[f"seed{seed}/{name}"] = train_student(base, name, seed, root, timings, pair_set, images, device)
    report = write_report(root, cfg, results, preset_changes(cfg), list(STUDENTS))
    return {
        "command": "demo", "report": str(report), "cache": extract["cache"], "teacher": teacher_run["backbone"],
        "pairs": str(pair_set.source), "seconds": round(time.perf_counter() - start, 1),
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "models": {k: v.public() for k, v in results.items()},
    }
