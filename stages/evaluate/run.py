"""`python cli.py evaluate`: face verification of any model on LFW-style and insightface `.bin` pair sets.

Models (`eval.model`): `student` (this run's final student), `teacher` (the `[teacher]` section, ONNX
included), `cache` (teacher embeddings read from the stage-one cache), or a path: a checkpoint of this
tool, a plain backbone state_dict (built with `[student]`), an `.onnx` model (with `[teacher]`'s
preprocessing options) or a TorchScript file.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cache import TeacherCache, cache_file
from common.errors import ConfigError
from config import PipelineConfig, config_from_dict, save_resolved
from models import build_student, build_teacher
from models.device import resolve_device
from models.embedder import Embedder, OnnxEmbedder, TorchEmbedder, TorchScriptEmbedder
from models.loading import load_backbone_weights, sha256_file
from readers import build_dataset
from readers.base import CorruptImageError, decode_image
from evaluation.compactness import (
    compactness_gap,
    inter_class_similarities,
    intra_class_similarities,
    similarity_stats,
)
from evaluation.pairs import PairSet, load_pair_set
from evaluation.plots import plot_roc, plot_similarity_histograms
from evaluation.protocol import roc_curve, squared_l2_distance, summarize
from checkpoints import latest_checkpoint, load_checkpoint

log = logging.getLogger(__name__)

STUDENT_NORM = ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])


def _torch_embedder(module: torch.nn.Module, arch: str, weights: Path, image_size: int, device: str) -> Embedder:
    mean, std = STUDENT_NORM
    return TorchEmbedder(module, arch=arch, weights_sha256=sha256_file(weights), input_size=image_size,
                         mean=mean, std=std, color="RGB", device=device)


def student_from_checkpoint(path: Path, image_size: int, device: str) -> tuple[Embedder, str]:
    """Rebuild the student of a `train`/`distill` checkpoint from the config stored inside it."""
    state = load_checkpoint(path)
    stored = config_from_dict(state["config"], source=str(path))
    module = build_student(stored.student, stored.data.image_size)
    module.load_state_dict(state["modules"]["student"])
    return _torch_embedder(module, stored.student.arch, path, stored.data.image_size, device), stored.student.arch


def build_embedder(cfg: PipelineConfig, device: str) -> tuple[Embedder | None, str]:
    """The model `eval.model` names, as an embedder, and a short tag for file names (None for `cache`)."""
    spec = cfg.eval.model
    size = cfg.data.image_size
    if spec == "cache":
        return None, "cache"
    if spec == "teacher":
        return build_teacher(cfg.teacher, size, device), "teacher"
    if spec == "student":
        ckpt = latest_checkpoint(Path(cfg.run.dir) / "checkpoints")
        if ckpt is None:
            raise ConfigError(f"eval.model = 'student': no checkpoint in '{Path(cfg.run.dir) / 'checkpoints'}' "
                              "(run train or distill first, or set eval.model to a path)")
        return student_from_checkpoint(ckpt, size, device)[0], "student"
    path = Path(spec)
    if not path.exists():
        raise ConfigError(f"config key 'eval.model': '{path}' is neither student, teacher, cache nor an existing file")
    tag = re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem)
    suffix = path.suffix.lower()
    t = cfg.teacher
    if suffix == ".onnx":
        return OnnxEmbedder(path, input_layout=t.input_layout, color=t.color, mean=t.mean, std=t.std,
                            input_size=t.input_size or size), tag
    if suffix in (".ts", ".torchscript", ".jit"):
        return TorchScriptEmbedder(path, mean=t.mean, std=t.std, color=t.color, input_size=t.input_size or size,
                                   device=device), tag
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(f"config key 'eval.model': '{path}' is not a loadable checkpoint: {e}") from None
    if isinstance(state, dict) and "modules" in state and "config" in state:
        return student_from_checkpoint(path, size, device)[0], tag
    module = build_student(cfg.student, size)
    load_backbone_weights(module, path)
    return _torch_embedder(module, cfg.student.arch, path, size, device), tag


def fused_embeddings(embedder: Embedder, images: np.ndarray, batch_size: int) -> np.ndarray:
    """insightface verification embedding: normalize(emb(image) + emb(flipped image)); [n, D] float32."""
    out = []
    for s in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[s:s + batch_size]))
        e = embedder.embed(x).float() + embedder.embed(x.flip(2)).float()
        out.append(F.normalize(e, dim=-1).numpy())
    return np.concatenate(out) if out else np.zeros((0, embedder.embedding_size), np.float32)


def decode_set(pair_set: PairSet, size: int) -> np.ndarray:
    """All distinct images of a pair set, decoded to uint8 [n, size, size, 3] RGB."""
    images = np.empty((len(pair_set.images), size, size, 3), dtype=np.uint8)
    for k in range(len(pair_set.images)):
        key = pair_set.image_key(k)
        try:
            images[k] = decode_image(pair_set.image_bytes(k), key, size)
        except CorruptImageError:
            raise ConfigError(f"pair set '{pair_set.source}': image {key} cannot be decoded") from None
    return images


def cache_embeddings(cfg: PipelineConfig, pair_set: PairSet) -> np.ndarray:
    """Flip-fused teacher embeddings of a pair set's images, read from the stage-one cache by key."""
    cache = TeacherCache(cache_file(cfg.cache.path, cfg.run.dir), in_ram="never")
    if not all(isinstance(im, Path) for im in pair_set.images):
        raise ConfigError(f"eval.model = 'cache' needs images with keys in the cache; '{pair_set.source}' is a .bin")
    root = Path(cfg.data.root or cfg.eval.root or pair_set.source.parent)
    index = {k: i for i, k in enumerate(cache.keys)}
    rows = []
    for im in pair_set.images:
        assert isinstance(im, Path)
        try:
            key = im.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            key = im.as_posix()
        if key not in index:
            raise ConfigError(f"eval.model = 'cache': image '{im}' (key '{key}') is not in cache '{cache.path}'")
        rows.append(index[key])
    r = np.asarray(rows)
    both = cache.targets(r, np.zeros_like(r)) + cache.targets(r, np.ones_like(r))
    return both / np.linalg.norm(both, axis=1, keepdims=True)


def training_compactness(cfg: PipelineConfig, embedder: Embedder, max_rows: int, out_dir: Path, tag: str) -> dict[str, Any] | None:
    """The paper's observation on training data: student vs cached teacher intra-class similarity."""
    path = cache_file(cfg.cache.path, cfg.run.dir)
    if not path.exists():
        return None
    cache = TeacherCache(path, in_ram="never")
    dataset = build_dataset(cfg.data)
    done = np.flatnonzero(cache.done)
    rng = np.random.default_rng(cfg.run.seed)
    classes = rng.permutation(np.unique(cache.labels[done]))
    chosen: list[int] = []
    for c in classes:
        rows_c = done[cache.labels[done] == c]
        chosen.extend(rows_c.tolist())
        if len(chosen) >= max_rows:
            break
    rows = np.asarray(sorted(chosen[:max_rows]))
    images = np.stack([dataset.load(int(r)) for r in rows])
    student = []
    for s in range(0, len(images), cfg.eval.batch_size):
        e = embedder.embed(torch.from_numpy(images[s:s + cfg.eval.batch_size]))
        student.append(F.normalize(e.float(), dim=-1).numpy())
    s_emb = np.concatenate(student)
    t_emb = cache.targets(rows, np.zeros_like(rows))
    labels = cache.labels[rows]
    s_stats, t_stats = similarity_stats(s_emb, labels), similarity_stats(t_emb, labels)
    plot = out_dir / f"{tag}_train_similarity.png"
    plot_similarity_histograms({
        "teacher (cache)": (intra_class_similarities(t_emb, labels), inter_class_similarities(t_emb, labels, 20000, 0)),
        tag: (intra_class_similarities(s_emb, labels), inter_class_similarities(s_emb, labels, 20000, 0)),
    }, plot, "training images: same-identity (solid) vs different-identity (dashed) cosine")
    return {"rows": int(len(rows)), "student": s_stats, "teacher": t_stats,
            "gap": compactness_gap(s_stats, t_stats), "plot": str(plot)}


class PeriodicVerifier:
    """Verification accuracy of the training student on `eval.pairs`, for the loop's `train.eval_every`."""

    def __init__(self, cfg: PipelineConfig) -> None:
        self.cfg = cfg
        self.sets = []
        for pairs_file in cfg.eval.pairs:
            pair_set = load_pair_set(pairs_file, cfg.eval.root or None)
            self.sets.append((pair_set, decode_set(pair_set, cfg.data.image_size)))

    def __call__(self, student: torch.nn.Module) -> dict[str, float]:
        device = next(student.parameters()).device
        mean, std = STUDENT_NORM
        embedder = TorchEmbedder(student, arch=self.cfg.student.arch, weights_sha256="", input_size=self.cfg.data.image_size,
                                 mean=mean, std=std, color="RGB", device=str(device))
        out = {}
        for pair_set, images in self.sets:
            emb = fused_embeddings(embedder, images, self.cfg.eval.batch_size)
            result = summarize(emb[pair_set.idx1], emb[pair_set.idx2], pair_set.issame, nfolds=self.cfg.eval.nfolds)
            out[pair_set.name] = float(result["accuracy_mean"])
        return out


def run_evaluate(cfg: PipelineConfig) -> dict[str, Any]:
    if not cfg.eval.pairs:
        raise ConfigError("config key 'eval.pairs' is empty: give one or more pair files (pairs.txt or .bin)")
    device = str(resolve_device(cfg.run.device))
    embedder, tag = build_embedder(cfg, device)
    out_dir = Path(cfg.run.dir) / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, out_dir, f"{tag}_config.toml")
    sets: dict[str, Any] = {}
    for pairs_file in cfg.eval.pairs:
        pair_set = load_pair_set(pairs_file, cfg.eval.root or None)
        name = pair_set.name if pair_set.name not in sets else Path(pairs_file).name
        if name in sets:
            raise ConfigError(f"config key 'eval.pairs': '{pairs_file}' is listed twice")
        if embedder is None:
            emb = cache_embeddings(cfg, pair_set)
        else:
            size = cfg.data.image_size
            emb = fused_embeddings(embedder, decode_set(pair_set, size), cfg.eval.batch_size)
        e1, e2 = emb[pair_set.idx1], emb[pair_set.idx2]
        record = summarize(e1, e2, pair_set.issame, nfolds=cfg.eval.nfolds)
        fpr, tpr = roc_curve(-squared_l2_distance(e1, e2).astype(np.float64), pair_set.issame)
        roc_png = out_dir / f"{tag}_{name}_roc.png"
        plot_roc({tag: (fpr, tpr)}, roc_png, f"{name}: {tag}")
        record = {k: v for k, v in record.items() if k not in ("thresholds", "fold_accuracies")}
        record["roc_plot"] = str(roc_png)
        if pair_set.labels is not None:
            record["similarity"] = similarity_stats(emb, pair_set.labels)
        sets[name] = record
        log.info("%s on %s: accuracy %.4f +- %.4f, AUC %s", tag, name, record["accuracy_mean"],
                 record["accuracy_std"], record["auc"])
    summary: dict[str, Any] = {"command": "evaluate", "model": cfg.eval.model, "sets": sets}
    if embedder is not None and cfg.eval.model != "teacher":
        summary["compactness"] = training_compactness(cfg, embedder, 2000, out_dir, tag)
    return summary

