"""Partial FC's class sampling: which class centres one step scores.

Partial FC (An et al., "Killing Two Birds with One Stone: Efficient and Robust Training of Face
Recognition CNNs by Partial FC", CVPR 2022; insightface arcface_torch `partial_fc_v2.py`): each step
keeps every class present in the batch (the positives) plus uniformly drawn other classes, up to
`int(sample_rate * C)` centres in all, and computes the margin softmax over those centres only. When
the batch alone holds more classes than that, the step keeps exactly the batch's classes.

Under several processes the class matrix is split over the ranks (`shard_range`); every rank scores the
gathered batch (`gather_rows`) against its own classes and the softmax is completed across ranks
(`sharded_cross_entropy`, arcface_torch's distributed softmax).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def sample_size(num_classes: int, sample_rate: float) -> int:
    """Centres one step scores at `sample_rate` (0 < r <= 1) of `num_classes`: int(r * C), at least 1
    (arcface_torch's `num_sample`; the batch's classes are kept even when they are more)."""
    if not 0.0 < sample_rate <= 1.0:
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
    return max(1, int(sample_rate * num_classes))


def sample_centres(labels: torch.Tensor, num_classes: int, num_sample: int,
                   draws: torch.Tensor | None = None) -> torch.Tensor:
    """Sorted class indices [K] one step scores: the classes of `labels` plus uniformly drawn others.

    `labels` [B] int64 in 0..C-1 (C = `num_classes`). K = max(`num_sample`, number of distinct labels):
    every distinct label is kept (ranked above every random draw, as arcface_torch's `perm[positive] = 2`),
    the remaining K - positives are a uniform sample without replacement of the other classes
    (uniform ranks in [0, 1), top K): `draws` [C] when given (a sharded head passes its slice of one draw
    over all classes, so ranks sharing a seed still sample different local rows), else `torch.rand(C)`.
    Returns int64 on `labels`' device, ascending, so a label's column in the sampled logits is
    `torch.searchsorted(index, label)`.
    """
    positives = torch.unique(labels)
    if positives.numel() >= num_sample:
        return positives
    if draws is None:
        draws = torch.rand(num_classes, device=labels.device)
    elif draws.shape != (num_classes,):
        raise ValueError(f"draws must have shape ({num_classes},), got {tuple(draws.shape)}")
    rank = draws.to(labels.device, torch.float32, copy=True)
    rank[positives] = 2.0
    return torch.topk(rank, num_sample, sorted=False).indices.sort().values


def remap_labels(labels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Each label's column [B] among the sampled centres `index` [K] (ascending; every label is in it)."""
    return torch.searchsorted(index, labels)


def shard_range(num_classes: int, rank: int, world: int) -> tuple[int, int]:
    """(first class, class count) of rank `rank` of `world` (arcface_torch's split: the first C mod N ranks
    hold one class more), so rank k holds about k*C/N .. (k+1)*C/N - 1."""
    base, extra = divmod(num_classes, world)
    return base * rank + min(rank, extra), base + int(rank < extra)


class _GatherRows(torch.autograd.Function):
    """All ranks' [B, D] rows, concatenated in rank order; backward sums every rank's gradient of the gathered
    rows (each rank's loss sees all of them through its own classes) and keeps this rank's, times `scale`."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:
        world, rank = dist.get_world_size(), dist.get_rank()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.rows, ctx.scale = rank, x.shape[0], scale
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous()
        dist.all_reduce(grad, dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows] * ctx.scale, None


def gather_rows(x: torch.Tensor, grad_scale: float = 1.0) -> torch.Tensor:
    """Every rank's rows `x` [B, D] (same B on all ranks) as [N*B, D], differentiable: this rank's rows get the
    gradient summed over all ranks' uses of them, times `grad_scale` (the world size when the caller's
    gradients are afterwards averaged over ranks, as DistributedDataParallel does)."""
    out: torch.Tensor = _GatherRows.apply(x, grad_scale)
    return out


class _ShardedCrossEntropy(torch.autograd.Function):
    """Softmax cross-entropy over classes split across ranks (arcface_torch's distributed softmax)."""

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        top = logits.detach().max(dim=1, keepdim=True).values
        dist.all_reduce(top, dist.ReduceOp.MAX)
        prob = (logits.detach() - top).exp()
        total = prob.sum(dim=1, keepdim=True)
        dist.all_reduce(total, dist.ReduceOp.SUM)
        prob /= total
        here = labels >= 0
        target = torch.zeros(logits.shape[0], dtype=prob.dtype, device=prob.device)
        target[here] = prob[here, labels[here]]
        dist.all_reduce(target, dist.ReduceOp.SUM)
        ctx.save_for_backward(prob, labels)
        return -target.clamp_min(1e-30).log().mean()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        prob, labels = ctx.saved_tensors
        here = labels >= 0
        out = prob.clone()
        out[here, labels[here]] -= 1.0
        return out * (grad / prob.shape[0]), None


def sharded_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats) of a softmax whose classes are split over the ranks of the process group.

    `logits` [N, K_rank] float32: this rank's columns for the same N samples on every rank; `labels` [N] int64:
    the sample's column here, or -1 where its class is on another rank. The row maximum and the sum of
    exponentials are all-reduced (max, sum), so every rank returns the same value, equal to
    `F.cross_entropy` over all columns concatenated; the gradient flows to this rank's columns only.
    """
    out: torch.Tensor = _ShardedCrossEntropy.apply(logits, labels)
    return out
