"""The stage-two training loop shared by `train` (margin loss only) and `distill` (ICD-Face).

Resumes exactly: the checkpoint holds model, head, projector, optimiser, scheduler, scaler, feature
bank, epoch and batch position, step, RNG states, config hash and cache fingerprint; data order and
flip bits are functions of (seed, epoch, position), and the DataLoader draws its worker seeds from its
own generator, so a stopped and resumed CPU run repeats the uninterrupted one's losses step for step.
"""
from __future__ import annotations

import contextlib
import csv
import logging
import math
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from common.errors import ConfigError, PipelineError
from config import PipelineConfig, config_hash, save_resolved, to_dict
from common.atomic import atomic_path
from losses import MarginHead, similarity_grid, weighted_sum
from models import build_student
from models.device import resolve_device
from stages.training.bank import FeatureBank
from stages.training.batches import EpochPlan, TrainBatches
from checkpoints import (
    seed_everything,
    capture_rng,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    restore_rng,
    save_checkpoint,
)
from stages.training.sampler import IdentityBatchSampler
from stages.training.schedule import lr_lambda
from stages.training.step import distillation_terms, normalize
from stages.training.targets import TargetProvider

log = logging.getLogger(__name__)

# Sections whose change makes a checkpoint a different experiment (refused on resume).
RESUME_SECTIONS = ("data", "student", "loss", "icd", "cache")


@dataclass
class TrainInputs:
    """What a loop run needs besides the config: the data, and for `distill` the targets and positives."""

    dataset: Any
    rows: np.ndarray  # usable dataset rows (all rows, or the cache's done rows)
    provider: TargetProvider | None = None
    positives: np.ndarray | None = None  # [N, K] teacher positives (dataset rows, -1 pads)
    cache: Any | None = None  # read inside the workers for batch targets
    cache_fingerprint: dict[str, Any] = field(default_factory=dict)
    teacher_dim: int = 0


def _amp_mode(requested: str, device: torch.device) -> str:
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "none"


def _section_hash(cfg: PipelineConfig) -> dict[str, str]:
    d = to_dict(cfg)
    return {s: config_hash(d[s]) for s in RESUME_SECTIONS}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class MetricsCSV:
    """Per-step metrics appended to `<run.dir>/metrics.csv` (columns step, loss, then the terms)."""

    def __init__(self, path: Path, columns: list[str], resume_step: int | None) -> None:
        self.path = path
        self.columns = columns
        if resume_step is not None and path.exists():
            with open(path, newline="") as fh:
                kept = [r for r in csv.DictReader(fh) if int(r["step"]) <= resume_step]
            with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
                w = csv.DictWriter(fh, columns, extrasaction="ignore")
                w.writeheader()
                w.writerows(kept)
        else:
            with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
                csv.DictWriter(fh, columns).writeheader()
        self.fh = open(path, "a", newline="")
        self.writer = csv.DictWriter(self.fh, columns, extrasaction="ignore")

    def append(self, row: dict[str, float]) -> None:
        self.writer.writerow(row)
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


def _sampler_inputs(labels: np.ndarray, rows: np.ndarray, positives: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Labels (renumbered densely) and positives restricted to the usable rows, in local row numbering."""
    local = np.full(len(labels), -1, dtype=np.int64)
    local[rows] = np.arange(len(rows))
    pos = None
    if positives is not None:
        p = positives[rows]
        pos = np.where(p >= 0, local[np.clip(p, 0, None)], -1)
    _, compact = np.unique(labels[rows], return_inverse=True)  # identities with no usable row drop out
    return compact.astype(np.int64), pos


def run_loop(cfg: PipelineConfig, inputs: TrainInputs, command: str, resume: bool = False,
             verifier: Callable[[nn.Module], dict[str, float]] | None = None) -> dict[str, Any]:
    """Train for `train.steps` (or `train.epochs`) and return the JSON summary.

    `verifier`, when given, is called with the student every `train.eval_every` steps and returns
    verification accuracies by pair-set name (logged, and appended to `<run.dir>/verification.csv`).
    """
    distill = inputs.provider is not None
    seed_everything(cfg.run.seed)
    device = resolve_device(cfg.run.device)
    run_dir = Path(cfg.run.dir)
    ckpt_dir = run_dir / "checkpoints"
    run_dir.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, run_dir)
    tc = cfg.train

    labels_all = np.asarray(inputs.dataset.labels, dtype=np.int64)
    num_classes = int(inputs.dataset.num_classes)
    bad = np.flatnonzero((labels_all < 0) | (labels_all >= num_classes))
    if len(bad):
        raise ConfigError(f"row {bad[0]} (key {inputs.dataset.keys[bad[0]]!r}) has label {labels_all[bad[0]]} "
                          f"outside 0..{num_classes - 1}")
    m = tc.images_per_identity
    p = tc.identities_per_batch or tc.batch_size // m
    if tc.batch_size < p * m:
        raise ConfigError(f"config key 'train.batch_size': {tc.batch_size} is smaller than "
                          f"train.identities_per_batch x train.images_per_identity = {p} x {m}")
    rows = inputs.rows
    sampler_labels, sampler_pos = _sampler_inputs(labels_all, rows, inputs.positives)
    # P x M identity rows per batch; the rest of the batch (train.random_share, or what an explicit
    # train.identities_per_batch leaves) is uniform random rows.
    random_share = max(tc.random_share, 1.0 - p * m / tc.batch_size) if tc.identities_per_batch else tc.random_share
    sampler = IdentityBatchSampler(sampler_labels, sampler_pos, batch_size=tc.batch_size, images_per_identity=m,
                                   random_share=random_share, seed=cfg.run.seed)
    per_epoch = len(sampler)
    total = tc.steps or max(1, math.ceil(tc.epochs * per_epoch))
    sdc_start = int(round(cfg.icd.warmup_epochs * per_epoch))

    student = build_student(cfg.student, cfg.data.image_size).to(device)
    head = MarginHead(cfg.student.embedding_size, num_classes, cfg.loss.head, cfg.loss.scale, cfg.loss.margin).to(device)
    modules: dict[str, nn.Module] = {"student": student, "head": head}
    projector: nn.Module | None = None
    bank: FeatureBank | None = None
    grid = None
    if distill:
        if inputs.teacher_dim != cfg.student.embedding_size:
            projector = nn.Linear(cfg.student.embedding_size, inputs.teacher_dim, bias=False).to(device)
            modules["projector"] = projector
        if cfg.icd.use_bank and cfg.loss.sdc_weight > 0:
            bank = FeatureBank(num_classes, cfg.icd.bank_size, cfg.student.embedding_size, cfg.icd.max_age,
                               device=device)
        grid = similarity_grid(cfg.icd.grid_step).to(device)
    params = [q for mod in modules.values() for q in mod.parameters()]
    if tc.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_lambda(s, total, tc.warmup_steps, tc.schedule, tc.milestones, tc.gamma))
    amp = _amp_mode(tc.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    weights = {"margin": 1.0, "fcd": cfg.loss.fcd_weight, "sdc": cfg.loss.sdc_weight}

    step, epoch, position = 0, 0, 0
    previous_throughput = 0.0
    resume_from = _resume_target(tc.resume, resume, ckpt_dir)
    if resume_from is not None:
        state = load_checkpoint(resume_from)
        _check_resumable(state, cfg, inputs, command, resume_from)
        for name, mod in modules.items():
            mod.load_state_dict(state["modules"][name])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if bank is not None:
            bank.load_state_dict(state["bank"])
        step, epoch, position = state["step"], state["epoch"], state["position"]
        restore_rng(state["rng"])
        previous_throughput = float(state.get("images_per_s", 0.0))
        log.info("resumed from %s at step %d (epoch %d, batch %d)", resume_from, step, epoch, position)

    columns = ["step", "loss", "margin"] + (["fcd", "sdc"] if distill else []) + \
        ["lr", "images_per_s", "ts_cos", "intra_teacher", "intra_student"]
    metrics = MetricsCSV(run_dir / "metrics.csv", columns, step if resume_from is not None else None)
    tb = _tensorboard(run_dir)
    loader_gen = torch.Generator()
    batches_ds = TrainBatches(inputs.dataset, inputs.cache)

    def save(final: bool = False) -> Path:
        path = checkpoint_path(ckpt_dir, step)
        save_checkpoint(path, {
            "command": command,
            "modules": {k: v.state_dict() for k, v in modules.items()},
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
            "bank": bank.state_dict() if bank is not None else None,
            "step": step, "epoch": epoch, "position": position, "total_steps": total,
            "rng": capture_rng(), "config": to_dict(cfg), "config_hash": config_hash(cfg),
            "section_hashes": _section_hash(cfg), "cache_fingerprint": inputs.cache_fingerprint,
            "num_classes": num_classes, "final": final,
            "images_per_s": seen / max(time.perf_counter() - start, 1e-9) if seen else previous_throughput,
        })
        prune_checkpoints(ckpt_dir, keep=2)
        return path

    log.info("%s: %d steps (%d per epoch), batch %d = %d ids x %d, %d rows, %d classes, device %s, amp %s",
             command, total, per_epoch, tc.batch_size, p, m, len(rows), num_classes, device, amp)
    start = time.perf_counter()
    seen = 0
    window_t, window_n = time.perf_counter(), 0
    last: dict[str, float] = {}
    last_ckpt: Path | None = resume_from
    for mod in modules.values():
        mod.train()
    while step < total:
        local_batches = [np.asarray(b, dtype=np.int64) for b in sampler.epoch_plan(epoch)]
        plan = EpochPlan([rows[b] for b in local_batches], cfg.run.seed, epoch, position)
        loader_gen.manual_seed(cfg.run.seed * 1000003 + epoch)
        loader = DataLoader(batches_ds, sampler=plan, batch_size=None, num_workers=cfg.data.workers,
                            generator=loader_gen, pin_memory=device.type == "cuda",
                            prefetch_factor=4 if cfg.data.workers else None)
        for batch in loader:
            images = batch["images"].to(device, non_blocking=True)
            labels = batch["labels"].to(device, non_blocking=True)
            x = images.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
            ctx = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
            with ctx:
                feats = student(x)
            emb = normalize(feats)
            terms = {"margin": head(feats.float(), labels)}
            stats: dict[str, float] = {}
            if distill:
                assert inputs.provider is not None and grid is not None
                targets = normalize(inputs.provider.batch_targets(batch).to(device))
                projected = normalize(projector(emb)) if projector is not None else emb
                dterms, stats = distillation_terms(emb, projected, targets, labels, batch["rows"].to(device), bank,
                                                   inputs.provider, step, cfg.icd, grid, sdc_on=step >= sdc_start)
                terms.update(dterms)
            loss = weighted_sum(terms, weights)
            if not torch.isfinite(loss):
                bad_terms = [k for k, v in terms.items() if not torch.isfinite(v)] or ["loss"]
                raise PipelineError(f"non-finite loss at step {step + 1}: term(s) {', '.join(bad_terms)}; "
                                    f"last good checkpoint: {last_ckpt or 'none'}")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if tc.grad_clip > 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
            scaler.step(opt)
            scaler.update()
            sched.step()
            if bank is not None:
                bank.update(labels, batch["rows"].to(device), batch["flips"].to(device), emb.detach(), step)
            step += 1
            position += 1
            n = len(labels)
            seen += n
            window_n += n
            last = {k: float(v.detach()) for k, v in terms.items()}
            row = {"step": step, "loss": float(loss.detach()), **last, "lr": sched.get_last_lr()[0], **stats}
            if step % tc.log_every == 0 or step == total:
                now = time.perf_counter()
                ips = window_n / max(now - window_t, 1e-9)
                row["images_per_s"] = ips
                eta = (total - step) * tc.batch_size / max(ips, 1e-9)
                log.info("step %d/%d loss %.4f %s lr %.4g %.1f img/s%s eta %s", step, total, row["loss"],
                         " ".join(f"{k} {v:.4f}" for k, v in last.items()), row["lr"], ips,
                         "".join(f" {k} {v:.3f}" for k, v in stats.items() if k != "pairs"),
                         time.strftime("%H:%M:%S", time.gmtime(eta)))
                window_t, window_n = now, 0
                if tb is not None:
                    for k, v in row.items():
                        if k != "step":
                            tb.add_scalar(k, v, step)
            metrics.append(row)
            if verifier is not None and tc.eval_every and (step % tc.eval_every == 0 or step == total):
                accuracies = verifier(student)
                student.train()
                log.info("step %d verification: %s", step, " ".join(f"{k} {v:.4f}" for k, v in accuracies.items()))
                _append_verification(run_dir / "verification.csv", step, accuracies)
            if step % tc.checkpoint_every == 0 and step < total:
                last_ckpt = save()
            if step >= total:
                break
        if step < total or position >= per_epoch:
            epoch, position = epoch + 1, 0
    elapsed = time.perf_counter() - start
    metrics.close()
    if tb is not None:
        tb.close()
    backbone = run_dir / "backbone.pth"
    if not (resume_from is not None and seen == 0 and backbone.exists()):  # a finished run stays as it is
        last_ckpt = save(final=True)
        save_checkpoint(backbone, student.state_dict())
    return {
        "command": command,
        "checkpoint": str(last_ckpt),
        "backbone": str(backbone),
        "steps": step,
        "epochs": round(step / per_epoch, 3),
        "seconds": round(elapsed, 3),
        "images_per_s": round(seen / max(elapsed, 1e-9) if seen else previous_throughput, 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "final_terms": last,
        "metrics": str(run_dir / "metrics.csv"),
        "config": str(run_dir / "config.toml"),
    }


def _append_verification(path: Path, step: int, accuracies: dict[str, float]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        w = csv.writer(fh)
        if new:
            w.writerow(["step", *accuracies])
        w.writerow([step, *accuracies.values()])


def _resume_target(setting: str, flag: bool, ckpt_dir: Path) -> Path | None:
    if setting and setting != "auto":
        path = Path(setting)
        if not path.exists():
            raise ConfigError(f"config key 'train.resume': checkpoint '{path}' not found")
        return path
    if setting == "auto" or flag:
        found = latest_checkpoint(ckpt_dir)
        if found is None and flag:
            raise ConfigError(f"--resume: no checkpoint in '{ckpt_dir}'")
        return found
    return None


def _check_resumable(state: dict[str, Any], cfg: PipelineConfig, inputs: TrainInputs, command: str, path: Path) -> None:
    if state.get("command") != command:
        raise ConfigError(f"checkpoint '{path}' was written by '{state.get('command')}', not '{command}'")
    now = _section_hash(cfg)
    differ = [s for s in RESUME_SECTIONS if state["section_hashes"].get(s) != now[s]]
    if differ:
        raise ConfigError(f"checkpoint '{path}' was trained with different config section(s): "
                          f"{', '.join('[' + s + ']' for s in differ)}")
    if state.get("cache_fingerprint") != inputs.cache_fingerprint:
        raise ConfigError(f"checkpoint '{path}' was trained against a different teacher cache")


def _tensorboard(run_dir: Path) -> Any:
    """A TensorBoard writer when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))
