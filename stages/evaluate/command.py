"""`python cli.py evaluate`: face verification of any model on LFW-style and insightface `.bin` pair sets."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from common.errors import ConfigError
from config import PipelineConfig, save_resolved
from evaluation.pairs import PairSet, load_pair_set
from evaluation.plots import plot_roc
from evaluation.verify import evaluate_sets
from models.device import resolve_device
from stages.evaluate.embedders import build_embedder, cache_embeddings
from stages.evaluate.train_compactness import training_compactness

log = logging.getLogger(__name__)

TRAIN_COMPACTNESS_ROWS = 2000


def run_evaluate(cfg: PipelineConfig) -> dict[str, Any]:
    """Evaluate `eval.model` on every set of `eval.pairs`; ROC plots and the config go to `<run.dir>/eval/`."""
    if not cfg.eval.pairs:
        raise ConfigError("config key 'eval.pairs' is empty: give one or more pair files (pairs.txt or .bin)")
    device = str(resolve_device(cfg.run.device))
    embedder, tag = build_embedder(cfg, device)
    out_dir = Path(cfg.run.dir) / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, out_dir, f"{tag}_config.toml")

    def embed(pair_set: PairSet) -> Any:
        if embedder is None:
            return cache_embeddings(cfg, pair_set)
        return embedder.embed_fused(pair_set.decode(cfg.data.image_size), cfg.eval.batch_size)

    pair_sets = [load_pair_set(p, cfg.eval.root or None) for p in cfg.eval.pairs]
    sets: dict[str, Any] = {}
    for name, result in evaluate_sets(pair_sets, embed, nfolds=cfg.eval.nfolds).items():
        roc_png = out_dir / f"{tag}_{name}_roc.png"
        plot_roc({tag: (result.fpr, result.tpr)}, roc_png, f"{name}: {tag}")
        sets[name] = {**result.record, "roc_plot": str(roc_png)}
        log.info("%s on %s: accuracy %.4f +- %.4f, AUC %s", tag, name, result.record["accuracy_mean"],
                 result.record["accuracy_std"], result.record["auc"])
    summary: dict[str, Any] = {"command": "evaluate", "model": cfg.eval.model, "sets": sets}
    if embedder is not None and cfg.eval.model != "teacher":
        summary["compactness"] = training_compactness(cfg, embedder, TRAIN_COMPACTNESS_ROWS, out_dir, tag)
    return summary
