"""Backbones (IResNet, MobileFaceNet, timm), embedding heads, weight loading and teacher embedders."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from common.errors import ConfigError
from config.choices import check_image_side
from config.schema import StudentConfig, TeacherConfig
from models.embedder import Embedder, OnnxEmbedder, Preprocessing, TorchEmbedder, TorchScriptEmbedder
from models.head import EmbeddingHead
from models.loading import (
    load_backbone_weights,
    load_state_dict_checked,
    output_dim_in_state,
    read_state_dict,
    sha256_file,
)
from models.registry import create_backbone, is_known_arch, list_models, register_model

FILE_ARCHS = ("onnx", "torchscript")
TEACHER = "teacher."

__all__ = [
    "Embedder", "EmbeddingHead", "OnnxEmbedder", "Preprocessing", "TorchEmbedder", "TorchScriptEmbedder",
    "build_student", "build_teacher", "create_backbone", "list_models", "load_backbone_weights",
    "register_model", "sha256_file",
]


def _check_arch(arch: str, key: str, extra: tuple[str, ...] = ()) -> None:
    if arch in extra or is_known_arch(arch):
        return
    valid = ", ".join([*list_models(), "timm/<name>", *extra])
    raise ConfigError(f"{key} {arch!r} is not a known model; valid: {valid}")


def _teacher_weights(cfg: TeacherConfig) -> Path:
    """The teacher's weights file: empty or missing -> ConfigError naming `teacher.weights`."""
    if not cfg.weights:
        raise ConfigError(f"teacher.weights is empty: teacher arch {cfg.arch!r} needs a trained weights file")
    path = Path(cfg.weights)
    if not path.is_file():
        raise ConfigError(f"teacher.weights {str(path)!r} does not exist (point it at your teacher, or run "
                          "`python cli.py demo`, which trains the default one)")
    return path


def _torch_teacher(cfg: TeacherConfig, path: Path, input_size: int, device: str) -> Embedder:
    """A registered or timm backbone with `teacher.weights` loaded strictly."""
    module = create_backbone(cfg.arch, cfg.embedding_size, input_size)
    state = read_state_dict(path)
    stored = output_dim_in_state(module, state)
    if stored is not None and stored != cfg.embedding_size:
        raise ConfigError(f"teacher.embedding_size is {cfg.embedding_size} but teacher.weights {str(path)!r} "
                          f"holds a {stored}-d model")
    load_state_dict_checked(module, state, f"teacher.weights {str(path)!r}")
    return TorchEmbedder(module, cfg.arch, sha256_file(path), input_size, cfg.mean, cfg.std, cfg.color, device,
                         cfg.input_layout, prefix=TEACHER)


def build_teacher(teacher_cfg: TeacherConfig, image_size: int, device: str) -> Embedder:
    """The frozen teacher described by `[teacher]`; checks its output size with a one-image probe.

    `teacher.input_size` 0 means `image_size` (for ONNX: the model's fixed input side if it has one).
    """
    cfg = teacher_cfg
    _check_arch(cfg.arch, "teacher.arch", FILE_ARCHS)
    path = _teacher_weights(cfg)
    input_size = cfg.input_size or image_size
    check_image_side(input_size, "teacher.input_size" if cfg.input_size else "data.image_size")
    if cfg.arch == "onnx":
        embedder: Embedder = OnnxEmbedder(path, cfg.input_layout, cfg.color, cfg.mean, cfg.std, cfg.input_size,
                                          device, prefix=TEACHER, default_input_size=image_size)
    elif cfg.arch == "torchscript":
        embedder = TorchScriptEmbedder(path, input_size, cfg.mean, cfg.std, cfg.color, device, cfg.input_layout,
                                       prefix=TEACHER)
    else:
        embedder = _torch_teacher(cfg, path, input_size, device)
    if embedder.embedding_size != cfg.embedding_size:
        raise ConfigError(f"teacher.embedding_size is {cfg.embedding_size} but the teacher "
                          f"({cfg.arch}, {str(path)!r}) outputs {embedder.embedding_size}-d embeddings")
    return embedder


def build_student(student_cfg: StudentConfig, image_size: int) -> nn.Module:
    """A freshly initialised student backbone from `[student]` at `image_size` (data.image_size)."""
    _check_arch(student_cfg.arch, "student.arch")
    check_image_side(image_size, "data.image_size")
    return create_backbone(student_cfg.arch, student_cfg.embedding_size, image_size, student_cfg.dropout)
