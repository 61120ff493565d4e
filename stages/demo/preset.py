"""The demo's preset: the `[demo]` keys applied over the other sections, and `--quick`'s smaller sizes."""
from __future__ import annotations

import logging
from typing import Any

from config import PipelineConfig, derive, value_at

log = logging.getLogger(__name__)

# `python cli.py demo --quick`: a seconds-long smoke test (applied before the preset, so its demo.* win).
QUICK: dict[str, Any] = {
    "demo.image_size": 16, "data.workers": 0,
    "data.synthetic.identities": 12, "data.synthetic.images_per_identity": 6,
    "data.synthetic.heldout_identities": 8, "data.synthetic.heldout_images_per_identity": 4,
    "data.synthetic.heldout_pairs": 40,
    "demo.teacher_arch": "iresnet18", "demo.teacher_embedding_size": 32, "teacher.batch_size": 32,
    "demo.student_arch": "mobilefacenet", "demo.student_embedding_size": 16,
    "train.batch_size": 16, "train.images_per_identity": 4, "train.steps": 4, "demo.warmup_steps": 0,
    "train.log_every": 2, "train.checkpoint_every": 1000, "demo.teacher_epochs": 1.0,
}


def preset_changes(cfg: PipelineConfig) -> dict[str, Any]:
    """What `[demo]` sets in the other sections (synthetic data, the CPU-sized models and budgets)."""
    d = cfg.demo
    return {
        "data.format": "synthetic", "data.root": "", "data.image_size": d.image_size,
        "teacher.arch": d.teacher_arch, "teacher.embedding_size": d.teacher_embedding_size,
        "student.arch": d.student_arch, "student.embedding_size": d.student_embedding_size,
        "train.epochs": d.student_epochs, "train.warmup_steps": d.warmup_steps,
        "loss.scale": d.scale, "loss.fcd_weight": d.fcd_weight,
    }


def overridden_settings(cfg: PipelineConfig, changes: dict[str, Any]) -> list[str]:
    """The keys the preset replaces although the user set them away from their default (say so, never silently)."""
    default = PipelineConfig()
    return [f"{k} = {value_at(cfg, k)!r} (the preset sets {v!r})" for k, v in changes.items()
            if value_at(cfg, k) != value_at(default, k) and value_at(cfg, k) != v]


def demo_config(cfg: PipelineConfig, quick: bool = False) -> PipelineConfig:
    """The config the demo runs: `--quick`'s sizes (when asked), then the `[demo]` preset."""
    if quick:
        cfg = derive(cfg, QUICK)
    changes = preset_changes(cfg)
    replaced = overridden_settings(cfg, changes)
    if replaced and not quick:
        log.warning("demo: its [demo] preset replaces %s; set the demo.* key of the same meaning instead",
                    "; ".join(replaced))
    return derive(cfg, changes)
