"""`python cli.py export`: a trained student -> a verified ONNX file with its preprocessing in the metadata, and a
model card (JSON + markdown) beside it.

`export.model` is `student` (the run's latest checkpoint), a checkpoint path, or a plain backbone file (built
with `[student]` at `data.image_size`). The ONNX file is written under a temporary name, run with onnxruntime
on faces at batch sizes 1 and 7 and compared with the torch model image by image; only a model that passes
is moved to `export.output`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from checkpoints.student import is_training_checkpoint, run_checkpoint, student_from_state
from common.atomic import atomic_path
from common.errors import ConfigError, PipelineError
from common.version import VERSION
from config import PipelineConfig, config_hash, save_resolved
from deploy.model_card import card_markdown, evaluation_summary, model_card
from deploy.onnx_export import (
    INPUT_NAME,
    OUTPUT_NAME,
    VERIFY_BATCH_SIZES,
    export_onnx,
    onnx_latency_ms,
    verify_onnx,
)
from models import build_student
from models.loading import load_backbone_weights, read_torch_file, sha256_file
from models.onnx_metadata import PREFIX, preprocessing_metadata
from models.preprocess import INSIGHTFACE_MEAN, INSIGHTFACE_STD
from models.size import parameter_count, torch_flops
from readers import SyntheticDataset, build_dataset
from readers.base import CorruptImageError

log = logging.getLogger(__name__)

OUTPUT_NOTE = ("Raw embedding, not L2-normalised. Verification as insightface: L2-normalise "
               "output(image) + output(horizontally flipped image), then compare with the cosine.")


@dataclass
class ExportSource:
    """The student to export: its module, what built it, and where it came from."""

    module: nn.Module
    arch: str
    embedding_size: int
    image_size: int
    path: Path
    training: dict[str, Any] = field(default_factory=dict)
    teacher: dict[str, Any] = field(default_factory=dict)


def load_source(cfg: PipelineConfig) -> ExportSource:
    """The model `export.model` names, with its provenance for the model card."""
    spec = cfg.export.model
    path = run_checkpoint(cfg.run.dir, "export.model") if spec == "student" else Path(spec)
    if not path.is_file():
        raise ConfigError(f"config key 'export.model': '{path}' is neither student nor an existing file")
    state = read_torch_file(path)
    if is_training_checkpoint(state):
        module, stored = student_from_state(state, str(path))
        fingerprint = state.get("cache_fingerprint") or {}
        training = {"command": state.get("command"), "method": stored.loss.method if state.get("command") ==
                    "distill" else "margin only (train)", "steps": state.get("step"),
                    "config_hash": state.get("config_hash"), "checkpoint": str(path),
                    "checkpoint_sha256": sha256_file(path)}
        if fingerprint.get("dataset"):
            training["dataset"] = fingerprint["dataset"]
        return ExportSource(module, stored.student.arch, stored.student.embedding_size, stored.data.image_size,
                            path, training, dict(fingerprint.get("teacher", {})))
    module = build_student(cfg.student, cfg.data.image_size)
    digest = load_backbone_weights(module, path)
    training = {"command": "unknown (a plain backbone file)", "backbone": str(path), "backbone_sha256": digest}
    return ExportSource(module, cfg.student.arch, cfg.student.embedding_size, cfg.data.image_size, path, training)


def verification_faces(cfg: PipelineConfig, size: int) -> tuple[np.ndarray, str]:
    """max(VERIFY_BATCH_SIZES) faces [n, size, size, 3] to verify the export on, and where they came from:
    evenly spaced images of `[data]` when it is readable, else synthetic faces."""
    count = max(VERIFY_BATCH_SIZES)
    if cfg.data.format != "synthetic":
        try:
            data = build_dataset(dataclasses.replace(cfg.data, image_size=size))
            rows = np.linspace(0, len(data) - 1, count).round().astype(int)
            return np.stack([data.load(int(r)) for r in rows]), f"{count} images of '{cfg.data.root}'"
        except (ConfigError, CorruptImageError) as e:
            log.info("export: verifying on synthetic faces: [data] is not readable here (%s)", e)
    s = cfg.data.synthetic
    faces = SyntheticDataset(count, 1, size, s.seed, s.difficulty)
    return np.stack([faces.load(i) for i in range(count)]), f"{count} synthetic faces"


def _evaluation(cfg: PipelineConfig, source: ExportSource) -> dict[str, Any]:
    """The run's `evaluate.json` figures of this model, when they are newer than the exported file."""
    path = Path(cfg.run.dir) / "evaluate.json"
    if not path.is_file():
        return {}
    if path.stat().st_mtime < source.path.stat().st_mtime:
        log.warning("export: '%s' is older than '%s'; the model card leaves its figures out", path, source.path)
        return {}
    try:
        sets = evaluation_summary(json.loads(path.read_text(encoding="utf-8")), cfg.export.model)
    except (OSError, ValueError) as e:  # json.JSONDecodeError is a ValueError
        raise PipelineError(f"'{path}' is not a readable evaluate summary: {e}; nothing was written") from None
    return {"source": str(path), "sets": sets} if sets else {}


def _staged(path: Path) -> Path:
    """Where a file of the export waits, complete, until `publish` gives it its name."""
    return path.with_name(f".{path.name}.new")


def card_paths(onnx_path: Path) -> tuple[Path, Path]:
    """`<name>.card.json` and `<name>.card.md` beside the ONNX file."""
    return onnx_path.with_suffix(".card.json"), onnx_path.with_suffix(".card.md")


def publish(onnx_tmp: Path, out: Path, card: dict[str, Any]) -> tuple[Path, Path]:
    """Make the export and its card visible together: the previous export's ONNX goes first, then the new
    card takes its names and the new ONNX its name last. An interruption leaves either the old ONNX with
    its card, or no ONNX (never an ONNX beside a card that is not its own); the ONNX is the last to appear."""
    json_path, md_path = card_paths(out)
    with contextlib.ExitStack() as stack:
        json_tmp = stack.enter_context(atomic_path(_staged(json_path)))
        md_tmp = stack.enter_context(atomic_path(_staged(md_path)))
        json_tmp.write_text(json.dumps(card, indent=1, sort_keys=True, default=str) + "\n", encoding="utf-8")
        md_tmp.write_text(card_markdown(card), encoding="utf-8")
    if out.exists():
        out.unlink()
    os.replace(_staged(json_path), json_path)
    os.replace(_staged(md_path), md_path)
    os.replace(onnx_tmp, out)
    return json_path, md_path


def run_export(cfg: PipelineConfig) -> dict[str, Any]:
    """Export, verify and describe the student; returns the JSON summary."""
    source = load_source(cfg)
    out = Path(cfg.export.output or Path(cfg.run.dir) / "student.onnx")
    if out.suffix.lower() != ".onnx":
        raise ConfigError(f"config key 'export.output': '{out}' must end in .onnx")
    if out.is_dir():
        raise ConfigError(f"config key 'export.output': '{out}' is a folder; name the .onnx file to write")
    if out.resolve() == source.path.resolve():
        raise ConfigError(f"config key 'export.output': '{out}' is the model being exported (export.model); "
                          "writing there would overwrite it")
    size, dtype = source.image_size, cfg.export.dtype
    mean, std = INSIGHTFACE_MEAN, INSIGHTFACE_STD
    described = {"arch": source.arch, "embedding_size": source.embedding_size, "input_name": INPUT_NAME,
                 "output_name": OUTPUT_NAME, "version": VERSION,
                 "training_config_hash": source.training.get("config_hash")}  # None for a plain backbone
    metadata = {**preprocessing_metadata(size, "NCHW", "RGB", mean, std),
                **{PREFIX + k: json.dumps(v) for k, v in described.items()}}  # every icdface.* value is JSON
    faces, faces_from = verification_faces(cfg, size)
    evaluation = _evaluation(cfg, source)  # a malformed evaluate.json stops the export before any work
    t0 = time.perf_counter()
    with atomic_path(_staged(out)) as tmp:
        try:
            export_onnx(source.module, tmp, size, metadata, opset=cfg.export.opset, dtype=dtype)
        except Exception as e:  # the exporter and onnx's checker raise many kinds of error
            raise PipelineError(f"torch.onnx.export of {source.arch} (opset {cfg.export.opset}, {dtype}) failed: "
                                f"{type(e).__name__}: {e}; nothing was written") from e
        try:
            check = verify_onnx(tmp, source.module, faces, dtype)
        except Exception as e:  # onnxruntime refusing the file (an op without a kernel for this dtype, ...)
            raise PipelineError(f"onnxruntime could not run the export of {source.arch} ({dtype}): "
                                f"{type(e).__name__}: {e}; nothing was written") from e
        if not check.passed:
            raise PipelineError(f"export to '{out}' failed verification: onnxruntime and torch embeddings differ "
                                f"(lowest cosine per batch size {check.min_cosine}, needed {check.threshold}); "
                                "nothing was written")
        log.info("export: %s (%s, opset %d) in %.1f s; onnxruntime vs torch on %s: lowest cosine %s", out, dtype,
                 cfg.export.opset, time.perf_counter() - t0, faces_from, check.min_cosine)
        input_spec = {"name": INPUT_NAME, "shape": ["batch", 3, size, size], "dtype": dtype, "layout": "NCHW",
                      "color": "RGB", "size": size, "mean": list(mean), "std": list(std),
                      "formula": "(pixel / 255 - mean) / std"}
        output_spec = {"name": OUTPUT_NAME, "shape": ["batch", source.embedding_size], "dtype": dtype,
                       "note": OUTPUT_NOTE}
        onnx_info = {"file": out.name, "sha256": sha256_file(tmp), "opset": cfg.export.opset, "dtype": dtype,
                     "exporter": "torch.onnx.export (dynamo=False)", "tool_version": VERSION,
                     "verification": {"images": faces_from, "min_cosine_by_batch_size": check.min_cosine,
                                      "threshold": check.threshold}}
        size_info = {"parameters": parameter_count(source.module), "flops": torch_flops(source.module, size),
                     "onnx_bytes": tmp.stat().st_size, "latency_ms": onnx_latency_ms(tmp, size, dtype)}
        log.info("export: %s parameters, %s FLOPs per face, %d bytes; onnxruntime latency (ms, one thread) %s",
                 size_info["parameters"], size_info["flops"], size_info["onnx_bytes"], size_info["latency_ms"])
        card = model_card(arch=source.arch, embedding_size=source.embedding_size, input_spec=input_spec,
                          output_spec=output_spec, onnx=onnx_info, training=source.training, teacher=source.teacher,
                          evaluation=evaluation, size=size_info)
    card_json, card_md = publish(_staged(out), out, card)
    save_resolved(cfg, out.parent, f"{out.stem}.export_config.toml")
    return {"command": "export", "onnx": str(out), "model_card": str(card_json), "model_card_md": str(card_md),
            "source": str(source.path), "dtype": dtype, "opset": cfg.export.opset,
            "min_cosine": check.min_cosine, "export_config_hash": config_hash(cfg)}
