"""The margin head split over the ranks of a `torchrun` launch: whole-matrix checkpoints and the global
gradient norm.

Under N processes rank k holds classes `losses.partial_fc.shard_range(C, k, N)` of the margin head
(`losses.MarginHead`, arcface_torch's model-parallel Partial FC). A checkpoint still holds the whole
[C, D] class matrix and the whole optimiser state of it (every rank's rows gathered in class order, so
the file is the one a single process writes), and a rank restoring one takes its own rows: a run
resumes on 1 process or N. Gradient clipping measures the norm over the student and the whole matrix.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from losses import MarginHead

if TYPE_CHECKING:
    from stages.training.state import Run

HEAD = "head"


def sharded_head(run: Run) -> MarginHead | None:
    """The run's margin head when it is split over several processes, else None."""
    head = run.modules.get(HEAD)
    return head if isinstance(head, MarginHead) and head.world > 1 else None


def _head_slot(run: Run, head: MarginHead) -> int:
    """The index of the head's weight in the optimiser's state dict (parameters in `run.parameters()` order)."""
    return next(i for i, p in enumerate(run.parameters()) if p is head.weight)


def whole_head_state(run: Run, state: dict[str, Any]) -> None:
    """Replace this rank's rows in a checkpoint state by the whole class matrix and its optimiser state
    (a collective: every rank calls it at the same step)."""
    head = sharded_head(run)
    if head is None:
        return
    rows = head.weight.shape[0]
    state["modules"][HEAD]["weight"] = run.dist.all_gather(head.weight.detach()).cpu()
    states, index = state["optimizer"]["state"], _head_slot(run, head)
    if index not in states:
        return
    slot = states[index] = dict(states[index])  # optimizer.state_dict() shares the live per-parameter dicts
    for key in sorted(slot):
        value = slot[key]
        if torch.is_tensor(value) and value.dim() >= 1 and value.shape[0] == rows:
            slot[key] = run.dist.all_gather(value.to(head.weight.device)).cpu()


def local_head_state(run: Run, state: dict[str, Any]) -> None:
    """Cut a checkpoint's whole class matrix (and its optimiser state) down to this rank's rows, in place."""
    head = run.modules.get(HEAD)
    if not isinstance(head, MarginHead):
        return
    saved = state.get("modules", {}).get(HEAD, {})
    weight = saved.get("weight") if isinstance(saved, dict) else None
    if not torch.is_tensor(weight) or weight.shape[0] != head.num_classes or head.world == 1:
        return
    start, rows = head.class_start, head.weight.shape[0]
    saved["weight"] = weight[start:start + rows].clone()
    slot = state.get("optimizer", {}).get("state", {}).get(_head_slot(run, head), {})
    for key, value in list(slot.items()):
        if torch.is_tensor(value) and value.dim() >= 1 and value.shape[0] == head.num_classes:
            slot[key] = value[start:start + rows].clone()


def clip_gradients(run: Run, max_norm: float) -> None:
    """`torch.nn.utils.clip_grad_norm_` over the student and the whole class matrix: the head's rows are on
    several ranks, so their squared norm is summed across them (every rank gets the same factor)."""
    head = sharded_head(run)
    if head is None:
        torch.nn.utils.clip_grad_norm_(run.parameters(), max_norm)
        return
    mine = {id(p) for p in head.parameters()}
    shared = [p.grad for p in run.parameters() if p.grad is not None and id(p) not in mine]
    local = [p.grad for p in head.parameters() if p.grad is not None]
    device = head.weight.device
    head_sq = sum((g.float().pow(2).sum() for g in local), torch.zeros((), device=device))
    dist.all_reduce(head_sq, dist.ReduceOp.SUM)
    shared_sq = sum((g.float().pow(2).sum() for g in shared), torch.zeros((), device=device))
    total = (shared_sq + head_sq).sqrt()
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in [*shared, *local]:
        g.mul_(coef.to(g.dtype))
