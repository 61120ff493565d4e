"""Combined-margin softmax head (ArcFace / CosFace in one function).

Follows the combined margin of ArcFace (Deng et al., "ArcFace: Additive Angular Margin Loss for Deep
Face Recognition", CVPR 2019) with CosFace (Wang et al., CVPR 2018) as a special case, with the
semantics of insightface arcface_torch ``CombinedMarginLoss``; used as L_margin in ICD-Face
(Yu et al., ICCV 2023).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from config.choices import MARGIN_HEADS, check_choice
from losses.partial_fc import remap_labels, sample_centres, sample_size

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
    """

    def __init__(self, embedding_size: int, num_classes: int, head: str = "arcface", scale: float = 64.0,
                 margin: float = 0.5, sample_rate: float = 1.0) -> None:
        super().__init__()
        self.head = head
        self.scale = float(scale)
        self.m1, self.m2, self.m3 = margin_params(head, margin)
        self.sample_rate = float(sample_rate)
        self.num_sample = sample_size(num_classes, self.sample_rate)
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.normal_(self.weight, std=0.01)
        self.last_index: torch.Tensor | None = None  # the centres the last sampled call scored (Partial FC)

    def cosine(self, embeddings: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Cosines [B, K] (float32) between L2-normalised embeddings [B, D] and normalised class centres
        (`weight` [K, D]; all C by default)."""
        weight = self.weight if weight is None else weight
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            return F.linear(F.normalize(embeddings.float(), dim=1), F.normalize(weight.float(), dim=1))

    def logits(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Scaled margin logits [B, C] float32 for embeddings [B, D] (any norm) and labels [B], over all classes."""
        return combined_margin_logits(self.cosine(embeddings), labels, self.scale, self.m1, self.m2, self.m3)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy (nats) of the margin logits over all classes, or over the sampled ones when
        `sample_rate` < 1: scalar L_margin."""
        labels = labels.long()
        if self.sample_rate >= 1.0:
            return F.cross_entropy(self.logits(embeddings, labels), labels)
        with torch.no_grad():
            index = sample_centres(labels, self.weight.shape[0], self.num_sample)
            local = remap_labels(labels, index)
        self.last_index = index
        cosine = self.cosine(embeddings, self.weight[index])
        return F.cross_entropy(combined_margin_logits(cosine, local, self.scale, self.m1, self.m2, self.m3), local)

    def extra_repr(self) -> str:
        return (f"classes={self.weight.shape[0]}, dim={self.weight.shape[1]}, head={self.head}, s={self.scale}, "
                f"m=({self.m1}, {self.m2}, {self.m3}), sample_rate={self.sample_rate}")
