"""`python cli.py evaluate`: face verification of any model on LFW-style and insightface `.bin` pair sets,
and IJB-B / IJB-C 1:1 verification (and 1:N identification where the release has its lists) on insightface
release folders."""
from __future__ import annotations

import json
import logging
from collections.abc import Collection
from pathlib import Path
from typing import Any

from common.atomic import atomic_write_text
from common.errors import ConfigError
from common.progress import progress
from config import PipelineConfig, save_resolved
from evaluation.compare import compare_on_set, model_pairs
from evaluation.ijb import IjbOptions, detect_ijb_name, evaluate_ijb
from evaluation.ijb.metrics import thin_roc
from evaluation.pairs import PairSet, load_pair_set
from evaluation.plots import plot_roc
from evaluation.train_compactness import training_compactness
from evaluation.verify import DEFAULT_FARS, SetResult, evaluate_sets
from models.device import resolve_device
from models.embedder import Embedder
from models.size import count_text as _count
from readers.face_size import face_size_warning, sample_sizes
from stages.evaluate.embedders import build_embedder, cache_embeddings

log = logging.getLogger(__name__)

CHANCE_NOTE = " (at chance)"  # beside an AUC below evaluation.collapse.CHANCE_AUC
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
    """Each IJB root through `evaluate_ijb`, resumable in `<out_dir>/<tag>_<name>_work/`; records by set name,
    with `identification` (1:N, from the same embedded chunks) where the root's `meta/` has the 1:N lists."""
    options = IjbOptions(cfg.eval.ijb_flip_test, cfg.eval.ijb_norm_score, cfg.eval.ijb_detector_score)
    sets: dict[str, Any] = {}
    for name, root in roots.items():
        result = evaluate_ijb(root, lambda images: embedder.embed_views(images).numpy(),
                              out_dir / f"{tag}_{name}_work", embedder.fingerprint(), options,
                              chunk_size=IJB_CHUNK_IMAGES, batch_size=cfg.eval.batch_size, workers=cfg.data.workers)
        roc_png = out_dir / f"{tag}_{name}_roc.png"
        plot_roc({tag: thin_roc(result.fpr, result.tpr)}, roc_png, f"{name}: {tag}")
        sets[name] = {**result.record, "roc_plot": str(roc_png)}
        log.info("%s on %s: AUC %s, TAR@FAR %s (insightface's reading; bounded: %s), pooling %s", tag, name,
                 result.record["auc"], result.record["tar_at_far"], result.record["tar_at_far_bounded"],
                 result.record["options"])
        for gallery, r in result.record.get("identification", {}).items():
            log.info("%s on %s 1:N gallery %s: rank-1 %s, rank-5 %s, TPIR@FPIR %s", tag, name, gallery,
                     r["rank_1"], r["rank_5"], r["tpir_at_fpir"])
    return sets


def model_input_side(embedder: Embedder, pair_sets: list[PairSet]) -> int:
    """The side pair images are decoded at: the model's own input size, never `data.image_size`.

    Warns once per set when sampled stored images are not `side` x `side` (`readers.face_size`): they are
    resized, which only aligned crops survive.
    """
    side = embedder.preprocessing.input_size
    for pair_set in pair_sets:
        warning = face_size_warning(f"pair set '{pair_set.source}'",
                                    sample_sizes(len(pair_set.images), pair_set.image_bytes), side)
        if warning:
            log.warning("%s", warning)
    return side


def unique_tag(tag: str, spec: str, taken: Collection[str]) -> str:
    """`tag`, or for a file whose stem is taken (`student` and `runs/x/student.onnx`) the stem and its suffix
    (`student_onnx`); still taken -> ConfigError."""
    if tag in taken and Path(spec).suffix:
        tag = f"{tag}_{Path(spec).suffix.lstrip('.').lower()}"
    if tag in taken:
        raise ConfigError(f"config key 'eval.model': two entries are both called '{tag}'")
    return tag


def build_models(cfg: PipelineConfig, device: str) -> list[tuple[str, Embedder | None, str]]:
    """Every `eval.model` entry built, with its unique tag, before anything is evaluated: a missing or
    unreadable later entry, or two entries of one tag, is a ConfigError before hours of embedding."""
    built: list[tuple[str, Embedder | None, str]] = []
    for spec in cfg.eval.model:
        embedder, tag = build_embedder(cfg, spec, device)
        built.append((spec, embedder, unique_tag(tag, spec, [t for _, _, t in built])))
    return built


def evaluate_model(cfg: PipelineConfig, spec: str, embedder: Embedder | None, tag: str, pair_sets: list[PairSet],
                   out_dir: Path) -> tuple[dict[str, Any], dict[str, SetResult]]:
    """One built `eval.model` entry on every set: its record (`model`, `sets` and, for a model other than the
    teacher, the training-set `compactness`) and the pair-set results."""
    save_resolved(cfg, out_dir, f"{tag}_config.toml")
    side = model_input_side(embedder, pair_sets) if embedder is not None else cfg.data.image_size

    def embed(pair_set: PairSet) -> Any:
        if embedder is None:
            return cache_embeddings(cfg, pair_set)
        log.info("%s on %s: decoding %d images at %d x %d", tag, pair_set.name, len(pair_set.images), side, side)
        bar = progress(len(pair_set.images), f"evaluate {tag} on {pair_set.name}")
        out = embedder.embed_fused(pair_set.decode(side), cfg.eval.batch_size, bar.update)
        bar.close()
        return out

    roots = ijb_roots(cfg, embedder)
    for pair_set in pair_sets:
        if pair_set.name in roots:
            raise ConfigError(f"config key 'eval.pairs': '{pair_set.source}' and the IJB root '{roots[pair_set.name]}' "
                              f"are both named '{pair_set.name}'")
    results = evaluate_sets(pair_sets, embed, nfolds=cfg.eval.nfolds)
    sets: dict[str, Any] = {}
    for name, result in results.items():
        roc_png = out_dir / f"{tag}_{name}_roc.png"
        plot_roc({tag: (result.fpr, result.tpr)}, roc_png, f"{name}: {tag}")
        sets[name] = {**result.record, "roc_plot": str(roc_png)}
        cos = result.record["pair_cosine"]
        log.info("%s on %s: accuracy %.4f +- %.4f, AUC %s%s, TAR@FAR %s at cosine thresholds %s, mean cosine "
                 "genuine %s / impostor %s", tag, name, result.record["accuracy_mean"], result.record["accuracy_std"],
                 _fmt(result.record["auc"]), CHANCE_NOTE if result.record["at_chance"] else "",
                 result.record["tar_at_far"], result.record["thresholds"], _fmt(cos["genuine_mean"]),
                 _fmt(cos["impostor_mean"]))
        if result.record["at_chance"]:
            log.warning("%s on %s: AUC %s is at chance: the model does not tell these people apart. A teacher: check "
                        "its preprocessing keys (teacher.mean, teacher.std, teacher.color, teacher.input_layout) and "
                        "that the faces are aligned crops; a student: read distill's warnings (loss.margin_weight, "
                        "loss.fcd_weight, train.lr; loss.method=auto chooses by the data)", tag, name,
                        _fmt(result.record["auc"]))
        if cos["collapsed"]:
            log.warning("%s on %s: the embedding has collapsed: impostor pairs have mean cosine %s (genuine %s); "
                        "a healthy face model is near 0 (the LFW teacher: 0.03)", tag, name,
                        _fmt(cos["impostor_mean"]), _fmt(cos["genuine_mean"]))
    if embedder is not None and roots:  # ijb_roots refuses the cache model
        sets.update(evaluate_ijb_roots(cfg, embedder, tag, roots, out_dir))
    record: dict[str, Any] = {"model": spec, "sets": sets}
    if embedder is not None:
        record.update(embedder.size())
        log.info("%s: %s parameters, %s FLOPs per image at %d x %d", tag, _count(record["parameters"]),
                 _count(record["flops"]), side, side)
    if embedder is not None and spec != "teacher":
        record["compactness"] = training_compactness(cfg, embedder, out_dir, tag)
    return record, results


def comparisons(pair_sets: list[PairSet], results: dict[str, dict[str, SetResult]], n_boot: int,
                seed: int) -> list[dict[str, Any]]:
    """For each set that names identities and each pair of models (a before b in `eval.model`), the
    difference b - a in AUC and TAR@FAR with a 95% paired-bootstrap interval over identities."""
    out: list[dict[str, Any]] = []
    tags = list(results)
    for k, pair_set in enumerate(pair_sets):
        if pair_set.labels is None:
            log.info("%s names no identities (a .bin file): no bootstrap comparison on it", pair_set.name)
            continue
        name = list(results[tags[0]])[k]
        scores = {tag: results[tag][name].scores for tag in tags}
        out += compare_on_set(name, pair_set, scores, model_pairs(tags), n_boot, seed, DEFAULT_FARS)
    return out


def comparison_table(models: dict[str, Any], comps: list[dict[str, Any]]) -> str:
    """The markdown table of several models: size and metrics per model and set (each TAR with the cosine
    threshold it holds at), then each difference with its interval."""
    lines = ["| model | parameters | FLOPs | set | accuracy | AUC | TAR@FAR=1e-3 (threshold) | "
             "TAR@FAR=1e-4 (threshold) |", "|---|---|---|---|---|---|---|---|"]
    for tag, model in models.items():
        for name, r in model["sets"].items():
            tar, thr = r.get("tar_at_far_bounded", r.get("tar_at_far", {})), r.get("thresholds", {})  # IJB: bounded
            acc = f"{r['accuracy_mean']:.4f} ± {r['accuracy_std']:.4f}" if "accuracy_mean" in r else "n/a"
            auc = _fmt(r.get("auc")) + (CHANCE_NOTE if r.get("at_chance") else "")
            tars = " | ".join(f"{_fmt(tar.get(k))} ({_fmt(thr.get(k))})" for k in ("1e-3", "1e-4"))
            lines.append(f"| {tag} | {_count(model.get('parameters'))} | {_count(model.get('flops'))} | {name} | "
                         f"{acc} | {auc} | {tars} |")
    lines += ["", "| set | metric | b - a | 95% interval (paired bootstrap over identities) |", "|---|---|---|---|"]
    for c in comps:
        lines.append(f"| {c['set']} | {c['metric']}: {c['b']} - {c['a']} | {_fmt(c['difference'])} | "
                     f"[{_fmt(c['ci_low'])}, {_fmt(c['ci_high'])}] |")
    return "\n".join(lines) + "\n"


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"



def run_evaluate(cfg: PipelineConfig) -> dict[str, Any]:
    """Evaluate each `eval.model` on every set of `eval.pairs`; plots, configs and tables go to `<run.dir>/eval/`.

    One model: the summary holds `model` and `sets`. Several: `models` (tag -> its record) and `comparisons`.
    """
    if not cfg.eval.pairs:
        raise ConfigError("config key 'eval.pairs' is empty: give one or more pair files (pairs.txt or .bin) "
                          "or IJB-B / IJB-C root folders")
    if not cfg.eval.model:
        raise ConfigError("config key 'eval.model' is empty: name a model (student, teacher, cache or a file)")
    device = str(resolve_device(cfg.run.device))
    out_dir = Path(cfg.run.dir) / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    pair_sets = [load_pair_set(p, cfg.eval.root or None) for p in cfg.eval.pairs if not Path(p).is_dir()]
    models: dict[str, Any] = {}
    results: dict[str, dict[str, SetResult]] = {}
    for spec, embedder, tag in build_models(cfg, device):
        models[tag], results[tag] = evaluate_model(cfg, spec, embedder, tag, pair_sets, out_dir)
    if len(models) == 1:
        return {"command": "evaluate", **next(iter(models.values()))}
    comps = comparisons(pair_sets, results, cfg.eval.n_boot, cfg.run.seed)
    summary = {"command": "evaluate", "models": models, "comparisons": comps}
    atomic_write_text(out_dir / "comparison.md", comparison_table(models, comps))
    atomic_write_text(out_dir / "comparison.json", json.dumps(summary, indent=1, sort_keys=True, default=str) + "\n")
    return summary
