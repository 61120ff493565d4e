"""Combined-margin softmax head (ArcFace / CosFace in one function).

Follows the combined margin of ArcFace (Deng et al., "ArcFace: Additive Angular Margin Loss for Deep
Face Recognition", CVPR 2019) with CosFace (Wang et al., CVPR 2018) as a special case, with the
semantics of insightface arcface_torch ``CombinedMarginLoss``; used as L_margin in ICD-Face
(Yu et al., ICCV 2023).
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from config.choices import MARGIN_HEADS, check_choice
from losses.partial_fc import (
    gather_rows,
    remap_labels,
    sample_centres,
    sample_size,
    shard_range,
    sharded_cross_entropy,
)

_ACOS_EPS = 1e-7


def margin_params(head: str, margin: float) -> tuple[float, float, float]:
    """Map ``loss.head`` / ``loss.margin`` to combined-margin parameters (m1, m2, m3).

    ArcFace (CVPR 2019): (1, margin, 0), e.g. (1, 0.5, 0); CosFace (CVPR 2018): (1, 0, margin),
    e.g. (1, 0, 0.35). Margins are in radians (m2) and cosine units (m3).
    """
    if head == "arcface":
        return 1.0, float(margin), 0.0
    if head == "cosface":
        return 1.0, 0.0, float(margin)
    check_choice(head, MARGIN_HEADS, "loss.head")
    raise AssertionError(head)  # pragma: no cover  (check_choice raised)


def _safe_sin_from_cos(cos: torch.Tensor) -> torch.Tensor:
    """sin(theta) = sqrt(1 - cos^2) for theta in [0, pi], exactly 0 with a zero (finite) gradient at cos = +-1."""
    sq = 1.0 - cos * cos
    positive = sq > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, sq, torch.ones_like(sq))), torch.zeros_like(sq))


def combined_margin_target(cos: torch.Tensor, m1: float, m2: float, m3: float) -> torch.Tensor:
    """Target-class cosine with the combined margin, cos(m1 * theta + m2) - m3 (ArcFace, CVPR 2019).

    ``cos`` [N] is the cosine between an embedding and its own class centre (unitless, in [-1, 1]);
    returns [N] in float32 (float64 for float64 input). For m1 == 1 the angle sum is expanded as
    cos*cos(m2) - sin*sin(m2) with sin = sqrt(1 - cos^2) (finite gradients at cos = +-1); where
    theta + m2 > pi (cos <= cos(pi - m2)) the insightface fallback cos - sin(pi - m2) * m2 keeps the
    logit monotone in theta. For m1 != 1
    theta = acos(cos clamped to [-1 + eps, 1 - eps]); where m1 * theta + m2 > pi the logit continues
    linearly in the angle past -1 (-1 - (m1 * theta + m2 - pi)) so it stays monotone.
    """
    cos = cos.to(torch.promote_types(cos.dtype, torch.float32))
    if m1 == 1.0:
        target = cos
        if m2 != 0.0:
            sin = _safe_sin_from_cos(cos)
            shifted = cos * math.cos(m2) - sin * math.sin(m2)
            fallback = cos - math.sin(math.pi - m2) * m2
            target = torch.where(cos > math.cos(math.pi - m2), shifted, fallback)
    else:
        theta = torch.acos(cos.clamp(-1.0 + _ACOS_EPS, 1.0 - _ACOS_EPS))
        angle = m1 * theta + m2
        target = torch.where(angle <= math.pi, torch.cos(angle), -1.0 - (angle - math.pi))
    return target - m3


def combined_margin_logits(
    cosine: torch.Tensor, labels: torch.Tensor, scale: float, m1: float, m2: float, m3: float
) -> torch.Tensor:
    """Scaled combined-margin logits s * (cos(m1*theta_y + m2) - m3 at the label, cos elsewhere).

    ArcFace (Deng et al., CVPR 2019) / CosFace (CVPR 2018), insightface ``CombinedMarginLoss``
    semantics. ``cosine`` [B, C] cosines between unit embeddings and unit class centres (unitless),
    ``labels`` [B] int64 in 0..C-1; returns [B, C] logits in float32 or wider (cosine units times ``scale``).
    """
    if cosine.dim() != 2 or labels.shape != cosine.shape[:1]:
        raise ValueError(f"combined_margin_logits: expected cosine [B, C] and labels [B], got "
                         f"{tuple(cosine.shape)} and {tuple(labels.shape)}")
    cosine = cosine.to(torch.promote_types(cosine.dtype, torch.float32))
    labels = labels.long()
    target = combined_margin_target(cosine.gather(1, labels[:, None]).squeeze(1), m1, m2, m3)
    one_hot = F.one_hot(labels, cosine.shape[1]).bool()
    return scale * torch.where(one_hot, target[:, None], cosine)


class MarginHead(nn.Module):
    """Learnable class matrix [C, D] plus combined-margin cross-entropy (L_margin of ICD-Face, ICCV 2023).

    `sample_rate` < 1 is Partial FC (CVPR 2022, arcface_torch `PartialFC_V2`): each call scores the batch's
    classes plus uniformly drawn others, `int(sample_rate * C)` centres in all (`losses.partial_fc`), and
    the gradient reaches only those rows of `weight`. As in arcface_torch, `weight` stays one dense
    parameter in the run's optimiser, so an unsampled row gets a zero gradient, and SGD's weight decay and
    momentum still act on it (arcface_torch `train_v2.py` puts the Partial FC weight in the same SGD as the
    backbone, with weight decay; v2 keeps no per-row optimiser state): an untouched row is decayed and
    moved by its momentum buffer, exactly as there. `sample_rate = 1` is the plain head.

    `world` > 1 (an initialised process group): this rank holds classes `shard_range(C, rank, world)` only
    (`weight` is [C_rank, D], `class_start` its first class); each call gathers every rank's embeddings
    and labels, samples this rank's share (`int(sample_rate * C_rank)`, ranked by this rank's slice of one
    uniform draw over all C classes: every rank draws the same C numbers from the run's seed, so the ranks
    stay in step yet sample different rows), and completes the softmax across
    ranks; the gathered embeddings' gradient is scaled by `world` for the student's DistributedDataParallel
    average (arcface_torch's AllGather). The head itself must not be wrapped in DistributedDataParallel.
    """

    def __init__(self, embedding_size: int, num_classes: int, head: str = "arcface", scale: float = 64.0,
                 margin: float = 0.5, sample_rate: float = 1.0, rank: int = 0, world: int = 1) -> None:
        super().__init__()
        self.head = head
        self.scale = float(scale)
        self.m1, self.m2, self.m3 = margin_params(head, margin)
        self.sample_rate = float(sample_rate)
        self.num_classes, self.rank, self.world = int(num_classes), int(rank), int(world)
        self.class_start, num_local = shard_range(self.num_classes, self.rank, self.world)
        self.num_sample = sample_size(num_local, self.sample_rate)
        self.weight = nn.Parameter(torch.empty(num_local, embedding_size))
        nn.init.normal_(self.weight, std=0.01)
        self.last_index: torch.Tensor | None = None  # the centres the last sampled call scored (Partial FC)

    def cosine(self, embeddings: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Cosines [B, K] (float32) between L2-normalised embeddings [B, D] and normalised class centres
        (`weight` [K, D]; all of this head's rows by default)."""
        weight = self.weight if weight is None else weight
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            return F.linear(F.normalize(embeddings.float(), dim=1), F.normalize(weight.float(), dim=1))

    def logits(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Scaled margin logits [B, C] float32 for embeddings [B, D] (any norm) and labels [B], over all classes
        (a head of one process)."""
        return combined_margin_logits(self.cosine(embeddings), labels, self.scale, self.m1, self.m2, self.m3)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy (nats) of the margin logits over all classes, or over the sampled ones when
        `sample_rate` < 1: scalar L_margin (the same value on every rank when sharded)."""
        labels = labels.long()
        if self.world == 1 and self.sample_rate >= 1.0:
            return F.cross_entropy(self.logits(embeddings, labels), labels)
        embeddings = embeddings.float()
        if self.world > 1:
            embeddings = gather_rows(embeddings, grad_scale=float(self.world))
            parts = [torch.empty_like(labels) for _ in range(self.world)]
            dist.all_gather(parts, labels.contiguous())
            labels = torch.cat(parts)
        with torch.no_grad():
            local = labels - self.class_start
            here = (local >= 0) & (local < self.weight.shape[0])
            column = torch.full_like(labels, -1)
            if self.sample_rate < 1.0:
                draws = None if self.world == 1 else \
                    torch.rand(self.num_classes, device=labels.device)[self.class_start:][:self.weight.shape[0]]
                index = sample_centres(local[here], self.weight.shape[0], self.num_sample, draws)
                column[here] = remap_labels(local[here], index)
                self.last_index = index
            else:
                column[here] = local[here]
        weight: torch.Tensor = self.weight if self.sample_rate >= 1.0 else self.weight[self.last_index]
        cosine = self.cosine(embeddings, weight)
        rows = here.nonzero().squeeze(1)
        target = combined_margin_target(cosine[rows, column[rows]], self.m1, self.m2, self.m3)
        logits = self.scale * cosine.index_put((rows, column[rows]), target)
        if self.world == 1:
            return F.cross_entropy(logits, column)
        return sharded_cross_entropy(logits, column)

    def extra_repr(self) -> str:
        shard = f", classes {self.class_start}..{self.class_start + self.weight.shape[0] - 1} of " \
                f"{self.num_classes} (rank {self.rank} of {self.world})" if self.world > 1 else ""
        return (f"classes={self.weight.shape[0]}, dim={self.weight.shape[1]}, head={self.head}, s={self.scale}, "
                f"m=({self.m1}, {self.m2}, {self.m3}), sample_rate={self.sample_rate}{shard}")
