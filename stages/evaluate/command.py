"""`python cli.py evaluate`: face verification of any model on LFW-style and insightface `.bin` pair sets,
and IJB-B / IJB-C 1:1 verification on insightface release folders."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from common.errors import ConfigError
from config import PipelineConfig, save_resolved
from evaluation.ijb import IjbOptions, detect_ijb_name, evaluate_ijb
from evaluation.ijb.metrics import thin_roc
from evaluation.pairs import PairSet, load_pair_set
from evaluation.plots import plot_roc
from evaluation.verify import evaluate_sets
from models.device import resolve_device
from models.embedder import Embedder
from stages.evaluate.embedders import build_embedder, cache_embeddings
from stages.evaluate.train_compactness import training_compactness

log = logging.getLogger(__name__)

TRAIN_COMPACTNESS_ROWS = 2000
IJB_CHUNK_IMAGES = 8192  # images per resumable embedding chunk of an IJB set (8192 x 2 x 512 float32 = 32 MiB)


def ijb_roots(cfg: PipelineConfig, embedder: Embedder | None) -> dict[str, Path]:
    """The entries of `eval.pairs` that are folders, as IJB roots by set name (`ijbb` / `ijbc`), checked."""
    roots: dict[str, Path] = {}
    for entry in cfg.eval.pairs:
        root = Path(entry)
        if not root.is_dir():
            continue
        if embedder is None:
            raise ConfigError(f"config key 'eval.model' = 'cache' cannot evaluate the IJB root '{root}' in "
                              "'eval.pairs': its images are not in the teacher cache; set eval.model to teacher, "
                              "student or a model file")
        name = detect_ijb_name(root)
        if name in roots:
            raise ConfigError(f"config key 'eval.pairs': '{roots[name]}' and '{root}' are both {name} roots")
        roots[name] = root
    return roots


def evaluate_ijb_roots(cfg: PipelineConfig, embedder: Embedder, tag: str, roots: dict[str, Path],
                       out_dir: Path) -> dict[str, Any]:
    """Each IJB root through `evaluate_ijb`, resumable in `<out_dir>/<tag>_<name>_work/`; records by set name."""
    options = IjbOptions(cfg.eval.ijb_flip_test, cfg.eval.ijb_norm_score, cfg.eval.ijb_detector_score)
    sets: dict[str, Any] = {}
    for name, root in roots.items():
        result = evaluate_ijb(root, lambda images: embedder.embed_views(images).numpy(),
                              out_dir / f"{tag}_{name}_work", embedder.fingerprint(), options,
                              chunk_size=IJB_CHUNK_IMAGES, batch_size=cfg.eval.batch_size, workers=cfg.data.workers)
        roc_png = out_dir / f"{tag}_{name}_roc.png"
        plot_roc({tag: thin_roc(result.fpr, result.tpr)}, roc_png, f"{name}: {tag}")
        sets[name] = {**result.record, "roc_plot": str(roc_png)}
        log.info("%s on %s: AUC %s, TAR@FAR %s", tag, name, result.record["auc"], result.record["tar_at_far"])
    return sets


def run_evaluate(cfg: PipelineConfig) -> dict[str, Any]:
    """Evaluate `eval.model` on every set of `eval.pairs`; ROC plots and the config go to `<run.dir>/eval/`."""
    if not cfg.eval.pairs:
        raise ConfigError("config key 'eval.pairs' is empty: give one or more pair files (pairs.txt or .bin) "
                          "or IJB-B / IJB-C root folders")
    device = str(resolve_device(cfg.run.device))
    embedder, tag = build_embedder(cfg, device)
    out_dir = Path(cfg.run.dir) / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, out_dir, f"{tag}_config.toml")

    def embed(pair_set: PairSet) -> Any:
        if embedder is None:
            return cache_embeddings(cfg, pair_set)
        return embedder.embed_fused(pair_set.decode(cfg.data.image_size), cfg.eval.batch_size)

    roots = ijb_roots(cfg, embedder)
    pair_sets = [load_pair_set(p, cfg.eval.root or None) for p in cfg.eval.pairs if not Path(p).is_dir()]
    for pair_set in pair_sets:
        if pair_set.name in roots:
            raise ConfigError(f"config key 'eval.pairs': '{pair_set.source}' and the IJB root '{roots[pair_set.name]}' "
                              f"are both named '{pair_set.name}'")
    sets: dict[str, Any] = {}
    for name, result in evaluate_sets(pair_sets, embed, nfolds=cfg.eval.nfolds).items():
        roc_png = out_dir / f"{tag}_{name}_roc.png"
        plot_roc({tag: (result.fpr, result.tpr)}, roc_png, f"{name}: {tag}")
        sets[name] = {**result.record, "roc_plot": str(roc_png)}
        log.info("%s on %s: accuracy %.4f +- %.4f, AUC %s", tag, name, result.record["accuracy_mean"],
                 result.record["accuracy_std"], result.record["auc"])
    if embedder is not None and roots:  # ijb_roots refuses the cache model
        sets.update(evaluate_ijb_roots(cfg, embedder, tag, roots, out_dir))
    summary: dict[str, Any] = {"command": "evaluate", "model": cfg.eval.model, "sets": sets}
    if embedder is not None and cfg.eval.model != "teacher":
        summary["compactness"] = training_compactness(cfg, embedder, TRAIN_COMPACTNESS_ROWS, out_dir, tag)
    return summary
