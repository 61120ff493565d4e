"""`python cli.py sweep SWEEP_FILE`: train every variant of a sweep file on every seed from one teacher cache,
evaluate each on the held-out pair sets of `eval.pairs`, and compare each with the baseline.

Runs live in `<run.dir>/<variant>/seed<seed>/` and are trained with `train.resume = "auto"`, so a stopped
sweep rerun with the same file continues the unfinished run and reuses finished ones (they are
evaluated again, which takes seconds, not trained again). For every seed and every set that names
identities, each variant is compared with the baseline of the same seed: the difference b - a
(b = the variant, a = the baseline) in AUC and TAR@FAR with a 95% paired-bootstrap interval over
identities (`evaluation.compare`). `sweep.md`, `sweep.json` (the summary), `roc.png`, the sweep file
(`sweep.toml`) and the resolved config go to `run.dir`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from cache.paths import cache_file
from common.atomic import atomic_write_text
from common.errors import ConfigError
from config import PipelineConfig, apply_overrides, save_resolved
from evaluation.collapse import pair_cosine_gap
from evaluation.compare import compare_on_set
from evaluation.pairs import PairSet, load_pair_set
from evaluation.train_compactness import training_compactness
from evaluation.verify import SetResult, evaluate_sets
from models.device import resolve_device
from models.embedder import Embedder
from stages.distill import run_distill
from stages.evaluate.command import model_input_side
from stages.evaluate.embedders import build_embedder
from stages.sweep.report import write_report
from stages.sweep.runs import SweepRun
from stages.sweep.spec import SweepSpec, Variant, read_sweep
from stages.train import run_train

log = logging.getLogger(__name__)

SWEEP_FARS = (1e-2, 1e-3, 1e-4)


def variant_config(cfg: PipelineConfig, spec: SweepSpec, variant: Variant, seed: int) -> PipelineConfig:
    """The config of one run: the shared cache (`cache.path` of `cfg`, resolved), the variant's overrides, then
    its run folder, seed and `train.resume = "auto"`."""
    run_dir = Path(cfg.run.dir) / variant.name / f"seed{seed}"
    shared = [f'cache.path="{cache_file(cfg.cache.path, cfg.run.dir).as_posix()}"']
    fixed = [f'run.dir="{run_dir.as_posix()}"', f"run.seed={seed}", 'train.resume="auto"', 'eval.model=["student"]']
    return apply_overrides(cfg, [*shared, *variant.overrides, *fixed],
                           f"sweep file '{spec.source}', variants.{variant.name}")


def held_out_sets(cfg: PipelineConfig) -> list[PairSet]:
    """The pair files of `eval.pairs` (IJB root folders are not part of a sweep)."""
    if not cfg.eval.pairs:
        raise ConfigError("config key 'eval.pairs' is empty: a sweep evaluates on held-out pair files "
                          "(`python cli.py split` writes them for any labelled data)")
    folders = [p for p in cfg.eval.pairs if Path(p).is_dir()]
    if folders:
        raise ConfigError(f"config key 'eval.pairs': '{folders[0]}' is a folder; a sweep evaluates pair files only "
                          "(pairs.txt or .bin), evaluate IJB roots with `evaluate`")
    return [load_pair_set(p, cfg.eval.root or None) for p in cfg.eval.pairs]


def evaluate_embedder(embedder: Embedder, pair_sets: list[PairSet], cfg: PipelineConfig) -> dict[str, SetResult]:
    """`evaluate_sets` at the model's own input size; records gain the mean same/different-identity cosines."""
    side = model_input_side(embedder, pair_sets)
    results = evaluate_sets(pair_sets, lambda s: embedder.embed_fused(s.decode(side), cfg.eval.batch_size),
                            nfolds=cfg.eval.nfolds, fars=SWEEP_FARS)
    for result in results.values():
        if result.intra.size and result.inter.size:
            result.record.update(intra_mean=float(result.intra.mean()), inter_mean=float(result.inter.mean()))
    return results


def train_and_evaluate(cfg: PipelineConfig, spec: SweepSpec, variant: Variant, seed: int,
                       pair_sets: list[PairSet], device: str) -> SweepRun:
    """Train (or continue, or reuse) one run and evaluate its student."""
    vcfg = variant_config(cfg, spec, variant, seed)
    log.info("sweep: %s, seed %d -> %s", variant.name, seed, vcfg.run.dir)
    summary = (run_train if variant.command == "train" else run_distill)(vcfg)
    embedder, _ = build_embedder(vcfg, "student", device)
    if embedder is None:
        raise ConfigError(f"sweep variant {variant.name}: no student to evaluate")
    return SweepRun(variant.name, seed, Path(vcfg.run.dir), summary["images_per_s"],
                    evaluate_embedder(embedder, pair_sets, vcfg),
                    training_compactness(vcfg, embedder, Path(vcfg.run.dir), "student"))


def compare_runs(spec: SweepSpec, pair_sets: list[PairSet], runs: list[SweepRun], n_boot: int,
                 seed: int) -> list[dict[str, Any]]:
    """Each variant against the baseline of the same run seed, on every set that names identities."""
    rows: list[dict[str, Any]] = []
    by_tag = {r.tag: r for r in runs}
    names = list(runs[0].results)
    for s in spec.seeds:
        base = f"{spec.baseline}/seed{s}"
        pairs = [(base, f"{v}/seed{s}") for v in spec.variants if v != spec.baseline]
        for pair_set, name in zip(pair_sets, names, strict=True):
            if pair_set.labels is None or not pairs:
                continue
            scores = {t: by_tag[t].results[name].scores for pair in pairs for t in pair}
            rows += compare_on_set(name, pair_set, scores, pairs, n_boot, seed, SWEEP_FARS)
    return rows


def run_sweep(cfg: PipelineConfig, sweep_file: str | Path) -> dict[str, Any]:
    """Every variant x seed of the sweep file (module docstring); returns the summary."""
    spec = read_sweep(sweep_file)
    for variant in spec.variants.values():  # every variant's overrides checked before anything trains
        variant_config(cfg, spec, variant, spec.seeds[0])
    pair_sets = held_out_sets(cfg)
    root = Path(cfg.run.dir)
    root.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, root)
    atomic_write_text(root / "sweep.toml", spec.text)
    device = str(resolve_device(cfg.run.device))
    runs = [train_and_evaluate(cfg, spec, spec.variants[v], s, pair_sets, device)
            for s in spec.seeds for v in spec.variants]
    reference: dict[str, SetResult] = {}
    if cfg.teacher.weights:
        teacher, _ = build_embedder(cfg, "teacher", device)
        if teacher is not None:
            reference = evaluate_embedder(teacher, pair_sets, cfg)
    for run in runs:
        for name, ref in reference.items():
            run.results[name].record["teacher_gap"] = pair_cosine_gap(run.results[name].scores, ref.scores)
    comparisons = compare_runs(spec, pair_sets, runs, cfg.eval.n_boot, cfg.run.seed)
    report = write_report(root, spec, runs, reference, comparisons)
    return {
        "command": "sweep", "report": str(report), "baseline": spec.baseline, "seeds": spec.seeds,
        "runs": {r.tag: {"variant": r.variant, "seed": r.seed, "run_dir": str(r.run_dir),
                         "images_per_s": r.images_per_s, "sets": {k: v.record for k, v in r.results.items()},
                         "compactness": r.compactness}
                 for r in runs},
        "teacher": {k: v.record for k, v in reference.items()}, "comparisons": comparisons,
    }
