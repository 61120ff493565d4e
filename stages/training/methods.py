"""The loss terms of each `loss.method` of `distill` (and of `train`), one function per method.

Every method maps the step's `StepInputs` to its dict of named scalar terms, each one pure function of
`losses/`; `METHOD_TERMS` picks the function by method name, `method_weights` gives each term its weight
(the run's `weights`, whose names are also the `metrics.csv` columns). The total loss is
sum_k w_k L_k over a method's terms:

- `train` (no teacher): L = w_margin L_margin.
- `icd` (default; ICD-Face, Yu et al., ICCV 2023): L = w_margin L_margin + w_fcd L_fcd + w_sdc L_sdc
  (+ w_imp L_sdc over in-batch different-identity pairs, `loss.impostor_sdc_weight`, off by default).
- `fcd`: L = w_margin L_margin + w_fcd L_fcd: `icd` with SDC off (no SDC term, no feature bank).
- `rkd` (Park et al., "Relational Knowledge Distillation", CVPR 2019): L = w_margin L_margin + w_fcd L_fcd
  + 25 L_RKD-D + 50 L_RKD-A (`rkd.distance_weight`, `rkd.angle_weight`, the paper's weights), on the unit
  student embeddings against the unit teacher targets of the batch. The paper adds RKD to the task loss;
  here the task loss is the margin softmax, and FCD stays as in `fcd` (`loss.fcd_weight = 0`: the paper's).
- `ekd` (Huang et al., "Evaluation-oriented Knowledge Distillation for Deep Face Recognition", CVPR 2022):
  L = w_margin L_margin + w_fcd L_fcd + w_ekd L_EKD (`ekd.weight`). Tencent TFace's `ekd` task trains
  softmax_loss + kd_loss, i.e. `loss.fcd_weight = 0`; FCD is kept by default so EKD is compared as an
  addition to FCD. The thresholds are EMAs of each model's batch thresholds (TFace), updated before the
  loss and kept in the run's `method_state` (checkpointed).
- `adadistill` (Boutros et al., ECCV 2024, github.com/fdbtrs/AdaDistill): L = L_AdaDistill alone, the
  margin softmax of the (projected) student against teacher class centres that move towards each
  sample's teacher embedding every step (EMA; `method_state`, checkpointed); no learnable head.
- `icd_rkd`: `icd` and `rkd` together, L = w_margin L_margin + w_fcd L_fcd + w_sdc L_sdc + 25 L_RKD-D
  + 50 L_RKD-A: ICD-Face's SDC on top of FCD + RKD.
- `margindistillation` (Svitov & Alyamkin, arXiv:2003.02586, github.com/david-svitov/margindistillation):
  L = L_MD alone, ArcFace of the (projected) student against frozen teacher class centres (computed once
  from the cache, `stages.training.centres`) with per-sample margins from the teacher; no learnable head.

The student is in teacher space (`Run.projector` when the dimensions differ) for FCD and the centre-based
methods; RKD and EKD compare relations, so they use the student's own embeddings.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from common.errors import ConfigError
from config import PipelineConfig
from losses import (
    adadistill_loss,
    class_margins,
    ekd_loss,
    ekd_thresholds,
    ema_thresholds,
    feature_consistency_loss,
    identity_distribution_consistency,
    margin_distillation_loss,
    rkd_angle_loss,
    rkd_distance_loss,
    similarity_distribution_consistency,
    teacher_centre_update,
)
from stages.training.impostors import impostor_pairs
from stages.training.pairs import PositivePairs, positive_pairs
from stages.training.shards import HEAD

if TYPE_CHECKING:
    from stages.training.state import Run

TRAIN = "train"  # the key of `train` (no teacher) in the tables below; not a `loss.method` value
# methods trained with the learnable margin head (the others replace it by teacher centres)
MARGIN_HEAD_METHODS = (TRAIN, "icd", "fcd", "rkd", "ekd", "icd_rkd")
# methods with ICD-Face's SDC term (they get the feature bank and the density grid)
SDC_METHODS = ("icd", "icd_rkd")
# the config sections a method reads besides [loss] (a resume must match them)
METHOD_SECTIONS: dict[str, tuple[str, ...]] = {"icd": ("icd",), "rkd": ("rkd",), "ekd": ("ekd",),
                                              "adadistill": ("adadistill",),
                                              "margindistillation": ("margindistillation",),
                                              "icd_rkd": ("icd", "rkd")}
# term -> the config key of its weight (terms without one have weight 1: they are their method's only loss)
WEIGHT_KEYS = {
    "margin": "loss.margin_weight", "fcd": "loss.fcd_weight", "sdc": "loss.sdc_weight",
    "impostor_sdc": "loss.impostor_sdc_weight", "rkd_distance": "rkd.distance_weight",
    "rkd_angle": "rkd.angle_weight", "ekd": "ekd.weight",
}


def normalize(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise the last axis in float32."""
    return F.normalize(x.float(), dim=-1)


@dataclass
class StepInputs:
    """What the loss terms of one step read: the student's output, the batch and (distill) the teacher's targets."""

    run: Run
    feats: torch.Tensor  # [B, D_s] student features as the network gives them (the margin head's input)
    emb: torch.Tensor  # [B, D_s] unit student embeddings, float32
    labels: torch.Tensor  # [B] int64
    rows: torch.Tensor  # [B] int64 dataset rows
    batch: dict[str, torch.Tensor]
    targets: torch.Tensor | None = None  # [B, D_t] unit teacher targets (distill)
    projected: torch.Tensor | None = None  # [B, D_t] unit student embeddings in teacher space (distill)
    _pairs: PositivePairs | None = field(default=None, repr=False)

    @property
    def host_labels(self) -> torch.Tensor:
        """[B] labels on the host, as loaded (what host-side pair finding reads, never waiting for the device)."""
        return self.batch["labels"] if "labels" in self.batch else self.labels.cpu()

    @property
    def host_rows(self) -> torch.Tensor:
        """[B] dataset rows on the host, as loaded."""
        return self.batch["rows"] if "rows" in self.batch else self.rows.cpu()

    def teacher(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(targets, projected student), both [B, D_t]; only for distill."""
        assert self.targets is not None and self.projected is not None, "teacher targets exist in distill only"
        return self.targets, self.projected

    def positive_pairs(self) -> PositivePairs:
        """The step's positive pairs (`stages.training.pairs`), computed once: the bank's too when the run has one."""
        if self._pairs is None:
            run = self.run
            assert run.inputs.provider is not None
            sources = run.cfg.icd.pairs if run.bank is not None else "batch"
            self._pairs = positive_pairs(self.emb, self.teacher()[0], self.host_labels, self.host_rows, run.bank,
                                         run.inputs.provider, run.step, sources=sources)
        return self._pairs


def step_inputs(run: Run, feats: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor,
                batch: dict[str, torch.Tensor]) -> StepInputs:
    """Normalised student embeddings and, for distill, the batch's teacher targets and the projected student."""
    emb = normalize(feats)
    x = StepInputs(run, feats, emb, labels, rows, batch)
    if run.inputs.provider is not None:
        x.targets = normalize(run.inputs.provider.batch_targets(batch).to(run.device))
        x.projected = normalize(run.nets["projector"](emb)) if "projector" in run.nets else emb
    return x


def margin_terms(run: Run, x: StepInputs) -> dict[str, torch.Tensor]:
    """L_margin of the learnable head (ArcFace / CosFace), when its weight is above 0."""
    return {"margin": run.nets[HEAD](x.feats.float(), x.labels)} if "margin" in run.weights else {}


def fcd_terms(run: Run, x: StepInputs) -> dict[str, torch.Tensor]:
    """L_margin and L_fcd = mean ||normalize(P e) - t||^2 (ICD-Face, ICCV 2023)."""
    targets, projected = x.teacher()
    return {**margin_terms(run, x), "fcd": feature_consistency_loss(projected, targets)}


def icd_terms(run: Run, x: StepInputs) -> dict[str, torch.Tensor]:
    """L_margin, L_fcd, L_sdc and (when weighted) the impostor-pair SDC term; both SDC terms start after the warm-up."""
    assert run.grid is not None
    icd = run.cfg.icd
    terms = fcd_terms(run, x)
    targets, _ = x.teacher()
    pairs = x.positive_pairs()
    started = run.step >= run.sdc_start
    if not started:
        terms["sdc"] = x.emb.sum() * 0.0
    elif icd.distribution == "per_identity":
        terms["sdc"] = identity_distribution_consistency(pairs.student, pairs.teacher, pairs.labels, run.grid,
                                                         icd.sigma, icd.kl_eps, icd.kl_direction, pairs.weights)
    else:
        terms["sdc"] = similarity_distribution_consistency(pairs.student, pairs.teacher, run.grid, icd.sigma,
                                                           icd.kl_eps, icd.kl_direction, pairs.weights)
    if "impostor_sdc" in run.weights:
        neg = impostor_pairs(x.emb, targets, x.host_labels, x.host_rows)
        terms["impostor_sdc"] = similarity_distribution_consistency(
            neg.student, neg.teacher, run.grid, icd.sigma, icd.kl_eps, direction=icd.kl_direction,
            weights=neg.weights) if started else x.emb.sum() * 0.0
    return terms


def rkd_terms(run: Run, x: StepInputs) -> dict[str, torch.Tensor]:
    """L_margin, L_fcd and RKD's distance-wise and angle-wise terms on the batch (Park et al., CVPR 2019)."""
    targets, _ = x.teacher()
    return {**fcd_terms(run, x), "rkd_distance": rkd_distance_loss(x.emb, targets),
            "rkd_angle": rkd_angle_loss(x.emb, targets)}


def icd_rkd_terms(run: Run, x: StepInputs) -> dict[str, torch.Tensor]:
    """ICD-Face's terms (margin, FCD, SDC) with RKD's distance and angle terms added: does SDC add to FCD + RKD?"""
    targets, _ = x.teacher()
    return {**icd_terms(run, x), "rkd_distance": rkd_distance_loss(x.emb, targets),
            "rkd_angle": rkd_angle_loss(x.emb, targets)}


def ekd_terms(run: Run, x: StepInputs) -> dict[str, torch.Tensor]:
    """L_margin, L_fcd and EKD's rank loss against the EMA thresholds, updated first (CVPR 2022; TFace `ekd`)."""
    cfg = run.cfg.ekd
    targets, _ = x.teacher()
    state = run.method_state
    if bool((x.host_labels[:, None] != x.host_labels[None, :]).any()):  # thresholds need negative pairs
        batch_s, batch_t = ekd_thresholds(x.emb, targets, x.labels, cfg.fprs)
        state["ekd_student_thresholds"] = ema_thresholds(state["ekd_student_thresholds"], batch_s, cfg.momentum)
        state["ekd_teacher_thresholds"] = ema_thresholds(state["ekd_teacher_thresholds"], batch_t, cfg.momentum)
    term = ekd_loss(x.emb, targets, x.labels, cfg.fprs, cfg.temperature, cfg.top_k, cfg.pos_weight, cfg.neg_weight,
                    state["ekd_student_thresholds"], state["ekd_teacher_thresholds"], cfg.critical_only)
    return {**fcd_terms(run, x), "ekd": term}


def adadistill_terms(run: Run, x: StepInputs) -> dict[str, torch.Tensor]:
    """The AdaDistill loss after this step's EMA update of the teacher centres (ECCV 2024)."""
    cfg = run.cfg.adadistill
    targets, projected = x.teacher()
    centres, _alpha = teacher_centre_update(run.method_state["adadistill_centres"], projected, targets, x.labels,
                                            cfg.weighted_alpha)
    run.method_state["adadistill_centres"] = centres
    return {"adadistill": adadistill_loss(projected, centres, x.labels, cfg.head, cfg.scale, cfg.margin)}


def margin_distillation_terms(run: Run, x: StepInputs) -> dict[str, torch.Tensor]:
    """MarginDistillation's ArcFace loss with per-sample margins against the frozen teacher centres (2020)."""
    cfg = run.cfg.margindistillation
    assert run.teacher_centres is not None
    targets, projected = x.teacher()
    margins = class_margins(targets, x.labels, run.teacher_centres, cfg.margin_min, cfg.margin_max)
    return {"margindistillation": margin_distillation_loss(projected, run.teacher_centres, x.labels, margins,
                                                           cfg.scale)}


# method name -> its terms (module docstring); TRAIN: `train`, which has no teacher
METHOD_TERMS: dict[str, Callable[[Run, StepInputs], dict[str, torch.Tensor]]] = {
    TRAIN: margin_terms, "icd": icd_terms, "fcd": fcd_terms, "rkd": rkd_terms, "ekd": ekd_terms,
    "adadistill": adadistill_terms, "margindistillation": margin_distillation_terms, "icd_rkd": icd_rkd_terms,
}


def step_method(cfg: PipelineConfig, distill: bool) -> str:
    """The key of `METHOD_TERMS` a run uses: `loss.method` for distill, TRAIN for train."""
    return cfg.loss.method if distill else TRAIN


def step_terms(run: Run, x: StepInputs) -> dict[str, torch.Tensor]:
    """The run's method's terms for this step (unweighted scalars)."""
    return METHOD_TERMS[step_method(run.cfg, run.distill)](run, x)


def step_stats(x: StepInputs) -> dict[str, torch.Tensor]:
    """Distill's batch statistics: mean teacher-student cosine and in-batch positive pairs' mean cosines."""
    if x.targets is None:
        return {}
    targets, projected = x.teacher()
    pairs = x.positive_pairs()
    with torch.no_grad():
        stats = {"ts_cos": (projected * targets).sum(-1).mean()}
        if pairs.in_batch:
            w = pairs.weights[: pairs.in_batch]
            stats["intra_teacher"] = (w * pairs.teacher[: pairs.in_batch]).sum() / w.sum()
            stats["intra_student"] = (w * pairs.student[: pairs.in_batch]).sum() / w.sum()
    return stats


def _margin_fcd(cfg: PipelineConfig) -> dict[str, float]:
    return {"margin": cfg.loss.margin_weight, "fcd": cfg.loss.fcd_weight}


# method name -> the weight of each of its terms (the keys `METHOD_TERMS[method]` returns), read from the config
METHOD_WEIGHTS: dict[str, Callable[[PipelineConfig], dict[str, float]]] = {
    TRAIN: lambda cfg: {"margin": cfg.loss.margin_weight},
    "icd": lambda cfg: {**_margin_fcd(cfg), "sdc": cfg.loss.sdc_weight, "impostor_sdc": cfg.loss.impostor_sdc_weight},
    "fcd": _margin_fcd,
    "rkd": lambda cfg: {**_margin_fcd(cfg), "rkd_distance": cfg.rkd.distance_weight,
                        "rkd_angle": cfg.rkd.angle_weight},
    "ekd": lambda cfg: {**_margin_fcd(cfg), "ekd": cfg.ekd.weight},
    "adadistill": lambda cfg: {"adadistill": 1.0},
    "margindistillation": lambda cfg: {"margindistillation": 1.0},
    "icd_rkd": lambda cfg: {**METHOD_WEIGHTS["icd"](cfg), **METHOD_WEIGHTS["rkd"](cfg)},
}


def method_weights(cfg: PipelineConfig, distill: bool, command: str) -> dict[str, float]:
    """Term name -> weight of every term the run's steps compute, in `metrics.csv` column order.

    The margin term is left out at `loss.margin_weight` = 0 (its head is then not run), and so is the
    impostor SDC term at weight 0; FCD and SDC stay (logged) at weight 0. A ConfigError names the weight
    keys when they are all 0.
    """
    weights = METHOD_WEIGHTS[step_method(cfg, distill)](cfg)
    if not any(weights.values()):
        keys = [WEIGHT_KEYS.get(k, k) for k in weights]
        named = f"key '{keys[0]}' is" if len(keys) == 1 else "keys " + ", ".join(f"'{k}'" for k in keys) + " are all"
        raise ConfigError(f"config {named} 0: {command} would have no loss term to train")
    return {k: w for k, w in weights.items() if w > 0 or k not in ("margin", "impostor_sdc")}


def initial_method_state(cfg: PipelineConfig, distill: bool, num_classes: int, teacher_dim: int,
                         device: torch.device) -> dict[str, torch.Tensor]:
    """The evolving teacher-side state of the method (checkpointed with the run): AdaDistill's class centres
    [C, D_t] (zeros, see `losses.adadistill`), EKD's running student and teacher thresholds [K] (zeros, TFace)."""
    method = step_method(cfg, distill)
    if method == "adadistill":
        return {"adadistill_centres": torch.zeros(num_classes, teacher_dim, device=device)}
    if method == "ekd":
        k = len(cfg.ekd.fprs)
        return {"ekd_student_thresholds": torch.zeros(k, device=device),
                "ekd_teacher_thresholds": torch.zeros(k, device=device)}
    return {}
