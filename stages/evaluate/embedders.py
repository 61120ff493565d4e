"""The model `eval.model` names, as something that gives flip-fused embeddings of a pair set's images.

`student` (this run's latest checkpoint), `teacher` (the `[teacher]` section, ONNX included), `cache`
(teacher embeddings read from the stage-one cache) or a path: a checkpoint of this tool, a plain
backbone state_dict (built with `[student]`), an `.onnx` model (an exported student's preprocessing
read from its metadata; any other ONNX model's from `[teacher]`) or a TorchScript file.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from cache import TeacherCache, cache_file
from checkpoints.student import is_training_checkpoint, load_student, run_checkpoint
from common.errors import ConfigError
from config import PipelineConfig
from evaluation.pairs import PairSet
from models import build_student, build_teacher
from models.embedder import Embedder, OnnxEmbedder, TorchEmbedder, TorchScriptEmbedder
from models.loading import load_backbone_weights, read_torch_file, sha256_file
from models.preprocess import flip_fuse

TORCHSCRIPT_SUFFIXES = (".ts", ".torchscript", ".jit")


def student_embedder(module: torch.nn.Module, arch: str, weights: Path, image_size: int, device: str) -> Embedder:
    """A student backbone as an embedder (insightface input normalisation, RGB)."""
    return TorchEmbedder(module, arch=arch, weights_sha256=sha256_file(weights), input_size=image_size, device=device)


def student_from_checkpoint(path: Path, device: str) -> Embedder:
    """Rebuild the student of a `train`/`distill` checkpoint from the config stored inside it."""
    module, stored = load_student(path)
    return student_embedder(module, stored.student.arch, path, stored.data.image_size, device)


def _file_embedder(cfg: PipelineConfig, path: Path, device: str) -> Embedder:
    """An `.onnx`, TorchScript, checkpoint or plain backbone file given as `eval.model`."""
    size = cfg.data.image_size
    suffix = path.suffix.lower()
    t = cfg.teacher
    if suffix == ".onnx":
        return OnnxEmbedder(path, input_layout=t.input_layout, color=t.color, mean=t.mean, std=t.std,
                            input_size=t.input_size or size, metadata_first=True)
    if suffix in TORCHSCRIPT_SUFFIXES:
        return TorchScriptEmbedder(path, mean=t.mean, std=t.std, color=t.color, input_size=t.input_size or size,
                                   device=device)
    if is_training_checkpoint(read_torch_file(path)):
        return student_from_checkpoint(path, device)
    module = build_student(cfg.student, size)
    load_backbone_weights(module, path)
    return student_embedder(module, cfg.student.arch, path, size, device)


def build_embedder(cfg: PipelineConfig, spec: str, device: str) -> tuple[Embedder | None, str]:
    """The model `spec` (an entry of `eval.model`) names, as an embedder, and a short tag for file names
    (None for `cache`)."""
    if spec == "cache":
        return None, "cache"
    if spec == "teacher":
        return build_teacher(cfg.teacher, cfg.data.image_size, device), "teacher"
    if spec == "student":
        return student_from_checkpoint(run_checkpoint(cfg.run.dir, "eval.model"), device), "student"
    path = Path(spec)
    if not path.exists():
        raise ConfigError(f"config key 'eval.model': '{path}' is neither student, teacher, cache nor an existing file")
    return _file_embedder(cfg, path, device), re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem)


def cache_rows(cache: TeacherCache, pair_set: PairSet, root: Path) -> np.ndarray:
    """The cache row of each image of an LFW-style pair set, found by its key relative to `root`."""
    if not all(isinstance(im, Path) for im in pair_set.images):
        raise ConfigError(f"eval.model = 'cache' needs images with keys in the cache; '{pair_set.source}' is a .bin")
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
    return np.asarray(rows, dtype=np.int64)


def cache_embeddings(cfg: PipelineConfig, pair_set: PairSet) -> np.ndarray:
    """Flip-fused teacher embeddings of a pair set's images, from the raw views stored in the cache.

    The same `flip_fuse` of the same raw outputs as a live teacher, so `eval.model = "cache"` gives the
    live teacher's numbers (to float32 rounding with `cache.dtype = "float32"`).
    """
    with TeacherCache(cache_file(cfg.cache.path, cfg.run.dir), in_ram="never") as cache:
        root = Path(cfg.data.root or cfg.eval.root or pair_set.source.parent)
        raw = cache.raw_views(cache_rows(cache, pair_set, root))
    return flip_fuse(torch.from_numpy(raw[:, 0]), torch.from_numpy(raw[:, 1])).numpy()
