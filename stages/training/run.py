"""`build_run`: everything one `train`/`distill` run holds, built from the config and its inputs.

A `Run` has the models (student, margin head, projector), the feature bank, optimiser, scheduler and
scaler, the epoch planner, the position in training (step, epoch, batch), and the state of the
`loss.method` (`stages.training.methods`: AdaDistill's or EKD's evolving state, MarginDistillation's
teacher centres). `train` and `distill` differ only in the `TrainInputs` they pass: `distill` adds
teacher targets, positives and the cache fingerprint, which switch on the projector, the bank and the
distillation terms; `train` accepts only `loss.method` "auto" (the default) or "icd", a ConfigError naming
the key otherwise, since it has no teacher to distil from; `distill` resolves "auto" before it gets here.
Resuming restores the whole state from a checkpoint (`checkpoints.format` describes its keys) after checking that the
checkpoint belongs to the same experiment.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from checkpoints import capture_rng, list_checkpoints, load_checkpoint, restore_rng, seed_everything
from common.distributed import Dist, device_for
from common.errors import ConfigError
from config import PipelineConfig, config_hash, to_dict
from config.auto import AUTO
from losses import MarginHead, similarity_grid
from models import build_student
from models.device import resolve_device
from models.loading import check_state_dict
from stages.training.bank import STORAGE_DTYPES, FeatureBank
from stages.training.centres import teacher_centres
from stages.training.experiment import changed_sections
from stages.training.methods import (
    MARGIN_HEAD_METHODS,
    SDC_METHODS,
    initial_method_state,
    method_weights,
    step_method,
)
from stages.training.sampler import IdentityBatchSampler
from stages.training.schedule import lr_lambda
from stages.training.shards import HEAD, local_head_state, whole_head_state
from stages.training.state import Run, TrainInputs

log = logging.getLogger(__name__)


def amp_mode(requested: str, device: torch.device) -> str:
    """`train.amp`: `auto` is bf16 (or fp16 without bf16 support) on CUDA and none on the CPU."""
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "none"


def sampler_inputs(labels: np.ndarray, rows: np.ndarray,
                   positives: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Labels (renumbered densely) and positives restricted to the usable rows, in local row numbering."""
    local = np.full(len(labels), -1, dtype=np.int64)
    local[rows] = np.arange(len(rows))
    pos = None
    if positives is not None:
        p = positives[rows]
        pos = np.where(p >= 0, local[np.clip(p, 0, None)], -1)
    _, compact = np.unique(labels[rows], return_inverse=True)  # identities with no usable row drop out
    return compact.astype(np.int64), pos


def _checked_labels(dataset: Any) -> tuple[np.ndarray, int]:
    labels = np.asarray(dataset.labels, dtype=np.int64)
    num_classes = int(dataset.num_classes)
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(bad):
        raise ConfigError(f"row {bad[0]} (key {dataset.keys[bad[0]]!r}) has label {labels[bad[0]]} "
                          f"outside 0..{num_classes - 1}")
    return labels, num_classes


def build_sampler(cfg: PipelineConfig, inputs: TrainInputs, labels: np.ndarray) -> tuple[IdentityBatchSampler, int]:
    """The P x M identity sampler over the usable rows, and P (0: random batches)."""
    tc = cfg.train
    m = tc.images_per_identity
    p = tc.identities_per_batch or tc.batch_size // m
    if tc.batch_size < p * m:
        raise ConfigError(f"config key 'train.batch_size': {tc.batch_size} is smaller than "
                          f"train.identities_per_batch x train.images_per_identity = {p} x {m}")
    if tc.identities_per_batch and tc.random_share == 1.0:
        raise ConfigError(f"config keys 'train.identities_per_batch' = {tc.identities_per_batch} and "
                          "'train.random_share' = 1.0 contradict each other: random batches hold no identity groups")
    sampler_labels, sampler_pos = sampler_inputs(labels, inputs.rows, inputs.positives)
    # P x M identity rows per batch; the rest of the batch (train.random_share, or what an explicit
    # train.identities_per_batch leaves) is uniform random rows.
    random_share = max(tc.random_share, 1.0 - p * m / tc.batch_size) if tc.identities_per_batch else tc.random_share
    sampler = IdentityBatchSampler(sampler_labels, sampler_pos, batch_size=tc.batch_size, images_per_identity=m,
                                   random_share=random_share, seed=cfg.run.seed)
    return sampler, sampler.p


def check_pair_sources(cfg: PipelineConfig, groups: int) -> None:
    """ConfigError naming the keys when `icd.pairs` asks for a source of SDC pairs that this run cannot have.

    groups: identity groups per batch (0: random batches, `train.random_share` = 1.0).
    """
    icd = cfg.icd
    if icd.pairs in ("batch", "both") and groups == 0:
        raise ConfigError(f"config keys 'icd.pairs' = {icd.pairs!r} and 'train.random_share' = "
                          f"{cfg.train.random_share!r}: random batches hold no identity groups, so there are no "
                          "in-batch pairs; set icd.pairs = \"bank\" or lower train.random_share")
    if icd.pairs in ("bank", "both") and icd.max_age == 0:
        raise ConfigError(f"config keys 'icd.pairs' = {icd.pairs!r} and 'icd.max_age' = 0: the bank is written "
                          "after the loss, so every slot is at least one step old when read and none is ever valid; "
                          "set icd.max_age >= 1 or icd.pairs = \"batch\"")


def check_sample_rate(cfg: PipelineConfig, method: str, margin_on: bool) -> None:
    """ConfigError naming `loss.sample_rate` when it is below 1 but the run has no learnable margin head to
    sample (a method built on teacher centres, or `loss.margin_weight` = 0)."""
    rate = cfg.loss.sample_rate
    if rate >= 1.0:
        return
    if method not in MARGIN_HEAD_METHODS:
        raise ConfigError(f"config key 'loss.sample_rate' = {rate!r}: Partial FC samples the learnable margin head, "
                          f"and loss.method = {method!r} has none (it scores teacher class centres); set "
                          "loss.sample_rate = 1.0")
    if not margin_on:
        raise ConfigError(f"config key 'loss.sample_rate' = {rate!r}: loss.margin_weight = 0 leaves the margin head "
                          "out, so there is nothing to sample; set loss.sample_rate = 1.0 or loss.margin_weight > 0")


def build_modules(cfg: PipelineConfig, inputs: TrainInputs, num_classes: int, device: torch.device,
                  dist: Dist | None = None) -> dict[str, nn.Module]:
    """Student, margin head (unless the method replaces it by teacher centres; split over the ranks of a
    torchrun launch, `stages.training.shards`) and (distill, when the dimensions differ) the bias-free
    projector P."""
    dist = dist or Dist()
    modules: dict[str, nn.Module] = {"student": build_student(cfg.student, cfg.data.image_size).to(device)}
    if step_method(cfg, inputs.provider is not None) in MARGIN_HEAD_METHODS:
        modules[HEAD] = MarginHead(cfg.student.embedding_size, num_classes, cfg.loss.head, cfg.loss.scale,
                                     cfg.loss.margin, cfg.loss.sample_rate, dist.rank, dist.world).to(device)
    if inputs.provider is not None and inputs.teacher_dim != cfg.student.embedding_size:
        modules["projector"] = nn.Linear(cfg.student.embedding_size, inputs.teacher_dim, bias=False).to(device)
    return modules


def build_optimizer(cfg: PipelineConfig, params: list[nn.Parameter],
                    total: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    tc = cfg.train
    if tc.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=tc.lr, momentum=tc.momentum,
                                                     weight_decay=tc.weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
    return opt, build_scheduler(cfg, opt, total)


def build_scheduler(cfg: PipelineConfig, opt: torch.optim.Optimizer, total: int,
                    step: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """The LR schedule over `total` steps (`train.schedule`), at `step` (> 0: a run resumed there)."""
    tc = cfg.train
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_lambda(s, total, tc.warmup_steps, tc.schedule, tc.milestones, tc.gamma),
        last_epoch=step - 1)


def build_run(cfg: PipelineConfig, inputs: TrainInputs, command: str, resume: bool = False,
              overwrite: bool = False) -> Run:
    """Seed, build every part of the run, and restore it from a checkpoint when resuming.

    A fresh run in a `run.dir` that holds checkpoints is refused unless `overwrite` (which deletes them).
    """
    distill = inputs.provider is not None
    if not distill and cfg.loss.method not in (AUTO, "icd"):
        raise ConfigError(f"config key 'loss.method' = {cfg.loss.method!r}: {command} has no teacher to distil from; "
                          "it trains the margin loss only and accepts \"auto\" (the default) or \"icd\" alone")
    if distill and cfg.loss.method == AUTO:
        raise ConfigError("config key 'loss.method' = \"auto\" reached the training loop unresolved "
                          "(stages.distill.resolve_method chooses the method from the cache)")
    weights = method_weights(cfg, distill, command)
    check_sample_rate(cfg, step_method(cfg, distill), "margin" in weights)
    seed_everything(cfg.run.seed)
    device = resolve_device(cfg.run.device)
    dist = Dist.from_env(device.type)
    device = device_for(device, dist)
    labels, num_classes = _checked_labels(inputs.dataset)
    sampler, p = build_sampler(cfg, inputs, labels)
    per_step = dist.world * cfg.train.grad_accum  # plan batches an optimiser step consumes
    total = cfg.train.steps or max(1, math.ceil(cfg.train.epochs * len(sampler) / per_step))
    modules = build_modules(cfg, inputs, num_classes, device, dist)
    sdc = step_method(cfg, distill) in SDC_METHODS and cfg.loss.sdc_weight > 0
    if sdc:
        check_pair_sources(cfg, p)
    bank = None
    if sdc and cfg.icd.pairs != "batch":
        bank = FeatureBank(num_classes, cfg.icd.bank_size, cfg.student.embedding_size, cfg.icd.max_age, device=device,
                           dtype=STORAGE_DTYPES[cfg.icd.bank_dtype], place=cfg.icd.bank_place)
    opt, sched = build_optimizer(cfg, [q for mod in modules.values() for q in mod.parameters()], total)
    amp = amp_mode(cfg.train.amp, device)
    run = Run(
        cfg=cfg, command=command, inputs=inputs, device=device, modules=modules, bank=bank,
        grid=similarity_grid(cfg.icd.grid_step).to(device) if step_method(cfg, distill) in SDC_METHODS else None,
        optimizer=opt, scheduler=sched, scaler=torch.amp.GradScaler(device.type, enabled=amp == "fp16"),
        autocast_dtype={"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp),
        weights=weights, sampler=sampler, total=total,
        sdc_start=int(round(cfg.icd.warmup_epochs * len(sampler) / per_step)),
        num_classes=num_classes, identities_per_batch=p,
        method_state=initial_method_state(cfg, distill, num_classes, inputs.teacher_dim, device), dist=dist,
    )
    candidates = resume_candidates(cfg.train.resume, resume, run.run_dir / "checkpoints", overwrite)
    if candidates:
        restore(run, candidates)
    if step_method(cfg, distill) == "margindistillation":
        assert inputs.provider is not None
        run.teacher_centres = torch.from_numpy(teacher_centres(
            run.run_dir, inputs.provider, inputs.cache_fingerprint, inputs.rows, labels, num_classes)).to(device)
    run.nets = wrap_modules(modules, dist, device)
    if sdc:
        warn_without_pairs(sampler.labels)
    log.info("%s (%s): %d steps (%d per epoch), batch %d = %d ids x %d + %d random rows, %d rows, %d classes, "
             "device %s, amp %s%s", command, step_method(cfg, distill), total, run.per_epoch, cfg.train.batch_size, p,
             cfg.train.images_per_identity, sampler.n_random, len(inputs.rows), num_classes, device, amp,
             f", {dist.world} processes ({dist.backend}), batch per process" if dist.active else "")
    return run


def wrap_modules(modules: dict[str, nn.Module], dist: Dist, device: torch.device) -> dict[str, nn.Module]:
    """The modules as the step calls them: each in `DistributedDataParallel` under torchrun (gradients
    averaged over the ranks in backward; rank 0's weights broadcast at the start), else themselves; the
    margin head is split over the ranks (each holds other classes) and stays unwrapped."""
    if not dist.active:
        return dict(modules)
    ids = [device.index] if device.type == "cuda" else None
    return {k: m if k == HEAD else nn.parallel.DistributedDataParallel(m, device_ids=ids)
            for k, m in modules.items()}


def warn_without_pairs(labels: np.ndarray) -> None:
    """Say once why SDC stays 0 when no identity has two usable images (there is no positive pair)."""
    if np.bincount(labels).max(initial=0) < 2:
        log.warning("no identity has two usable images, so there are no positive pairs: the SDC term "
                    "(loss.sdc_weight) stays 0 for the whole run")


def resume_candidates(setting: str, flag: bool, ckpt_dir: Path, overwrite: bool = False) -> list[Path]:
    """Checkpoints to resume from, best first: `train.resume` (a path), or with "auto"/`--resume` the
    checkpoints of `ckpt_dir`, latest first (an unreadable one falls back to the one before).

    A fresh run (neither) in a directory that holds checkpoints is refused, unless `overwrite`,
    which deletes them, so a run directory is never half reused.
    """
    if setting and setting != "auto":
        path = Path(setting)
        if not path.exists():
            raise ConfigError(f"config key 'train.resume': checkpoint '{path}' not found")
        return [path]
    found = [p for _, p in reversed(list_checkpoints(ckpt_dir))]
    if setting == "auto" or flag:
        if not found and flag:
            raise ConfigError(f"--resume: no checkpoint in '{ckpt_dir}'")
        return found
    if found and not overwrite:
        raise ConfigError(f"run.dir '{ckpt_dir.parent}' already holds {found[0].name}: use --resume to continue "
                          "it, or a new run.dir, or --overwrite to start it again")
    for path in found:
        path.unlink(missing_ok=True)  # under torchrun every rank clears the same files
    return []


def check_resumable(state: dict[str, Any], run: Run, path: Path) -> None:
    """Refuse a checkpoint of another command, other experiment sections or another teacher cache."""
    if state.get("command") != run.command:
        raise ConfigError(f"checkpoint '{path}' was written by '{state.get('command')}', not '{run.command}'")
    differ = changed_sections(state["config"], run.cfg, f"checkpoint '{path}'", step_method(run.cfg, run.distill))
    if differ:
        raise ConfigError(f"checkpoint '{path}' was trained with different config section(s): "
                          f"{', '.join('[' + s + ']' for s in differ)}")
    if state.get("cache_fingerprint") != run.inputs.cache_fingerprint:
        raise ConfigError(f"checkpoint '{path}' was trained against a different teacher cache")


def run_state(run: Run, images_per_s: float, final: bool = False) -> dict[str, Any]:
    """Everything a checkpoint holds to resume `run` exactly (the keys `checkpoints.format` describes); a
    margin head split over the ranks is gathered whole (a collective under torchrun)."""
    state = {
        "command": run.command,
        "modules": {k: v.state_dict() for k, v in run.modules.items()},
        "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(), "bank": run.bank.state_dict() if run.bank is not None else None,
        "method_state": {k: v.detach().cpu().clone() for k, v in run.method_state.items()},
        "step": run.step, "epoch": run.epoch, "position": run.position, "total_steps": run.total,
        "rng": capture_rng(), "config": to_dict(run.cfg), "config_hash": config_hash(run.cfg),
        "cache_fingerprint": run.inputs.cache_fingerprint,
        "num_classes": run.num_classes, "final": final, "images_per_s": images_per_s,
        "world_size": run.dist.world,
    }
    whole_head_state(run, state)
    return state


def _check_modules(state: dict[str, Any], modules: dict[str, Any], path: Path) -> None:
    """ConfigError naming `path` unless the checkpoint holds weights that fit each of the run's modules."""
    saved = state.get("modules")
    if not isinstance(saved, dict):
        raise ConfigError(f"checkpoint {path} holds no modules")
    for name, module in modules.items():
        if not isinstance(saved.get(name), dict):
            raise ConfigError(f"checkpoint {path} holds no weights for {name}")
        check_state_dict(module, saved[name], f"{path} (modules.{name})")


def first_readable(candidates: list[Path], modules: dict[str, Any] | None = None,
                   localise: Callable[[dict[str, Any]], None] | None = None) -> tuple[Path, dict[str, Any]]:
    """The first checkpoint of `candidates` that loads (and whose weights fit `modules`, when given, after
    `localise` cut a whole class matrix to this rank's rows); the ones before it are reported as skipped."""
    for k, path in enumerate(candidates):
        try:
            state = load_checkpoint(path)
            if localise is not None:
                localise(state)
            if modules is not None:
                _check_modules(state, modules, path)
        except ConfigError as e:
            if k + 1 == len(candidates):
                raise
            log.warning("%s; resuming from the one before, %s", e, candidates[k + 1].name)
            continue
        return path, state
    raise ConfigError("no checkpoint to resume from")  # pragma: no cover  (candidates is never empty)


def restore(run: Run, candidates: list[Path]) -> None:
    """Load the first readable checkpoint of `candidates` into `run` (after `check_resumable`)."""
    path, state = first_readable(candidates, run.modules, lambda st: local_head_state(run, st))
    check_resumable(state, run, path)
    for name, mod in run.modules.items():
        mod.load_state_dict(state["modules"][name])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    if run.bank is not None:
        run.bank.load_state_dict(state["bank"])
    saved = state.get("method_state") or {}
    for name, current in run.method_state.items():
        if name not in saved or tuple(saved[name].shape) != tuple(current.shape):
            raise ConfigError(f"checkpoint '{path}' holds no {name} of shape {tuple(current.shape)}")
        run.method_state[name] = saved[name].to(run.device, current.dtype)
    run.step, run.epoch, run.position = state["step"], state["epoch"], state["position"]
    world = int(state.get("world_size", 1))
    if world != run.dist.world:
        if not run.cfg.train.steps:  # the epochs left, in steps of this launch's world
            left = run.cfg.train.epochs * len(run.sampler) - (run.epoch * len(run.sampler) + run.position)
            run.total = run.step + max(0, math.ceil(left / run.batches_per_step))
            run.scheduler = build_scheduler(run.cfg, run.optimizer, run.total, run.step)  # the new horizon
        log.warning("%s was written by %d process(es), resumed on %d: the epoch goes on from plan batch %d, "
                    "but the data order and RNG streams differ from an uninterrupted run", path.name, world,
                    run.dist.world, run.position)
    restore_rng(state["rng"])
    run.previous_images_per_s = float(state.get("images_per_s", 0.0))
    run.resumed_from = run.last_checkpoint = path
    log.info("resumed from %s at step %d (epoch %d, batch %d)", path, run.step, run.epoch, run.position)
