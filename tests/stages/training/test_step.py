"""`stages.training.step`: under torchrun every rank writes every rank's bank entries, in rank order, and the
plan position moves one batch per rank each step."""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch

from stages.training.bank import FeatureBank
from stages.training.step import advance, backward, update_bank


@dataclass
class TwoRanks:
    """Rank 0 of two, whose peer sent `other` (each tensor as `all_gather` would receive it)."""

    other: dict[int, torch.Tensor]
    world: int = 2
    active: bool = True

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return torch.cat([tensor, self.other[tensor.shape[1]]])


def test_bank_takes_every_ranks_entries_in_rank_order() -> None:
    mine = {"labels": torch.tensor([0, 1]), "rows": torch.tensor([10, 20]), "flips": torch.tensor([0, 1])}
    peer_meta = torch.tensor([[1, 21, 0], [2, 30, 1]])  # labels, rows, flips of the other rank's batch
    peer_emb = torch.full((2, 4), 0.5)
    run = SimpleNamespace(bank=FeatureBank(3, 2, 4, max_age=10), step=7, dist=TwoRanks({3: peer_meta, 4: peer_emb}))
    update_bank(run, mine, torch.ones(2, 4))  # type: ignore[arg-type]
    assert run.bank.rows.tolist() == [[10, -1], [20, 21], [30, -1]]
    assert run.bank.flips.tolist() == [[0, 0], [1, 0], [1, 0]]
    assert torch.equal(run.bank.emb[1], torch.tensor([[1.0] * 4, [0.5] * 4]))
    assert run.bank.steps[2, 0] == 7


def test_advance_moves_one_plan_batch_per_rank_and_leaves_the_step_count() -> None:
    run = SimpleNamespace(step=0, position=0, epoch=0, images_seen=0, sampler=[0] * 5, dist=SimpleNamespace(world=2))
    for _ in range(3):
        advance(run, 8)  # type: ignore[arg-type]
    assert (run.step, run.epoch, run.position, run.images_seen) == (0, 1, 0, 24)  # positions 0, 2, 4 -> next epoch


def test_accumulated_gradient_is_the_mean_of_the_batches_gradients() -> None:
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    xs = [torch.randn(4, 3), torch.randn(4, 3)]
    want = []
    for x in xs:
        net.zero_grad()
        net(x).square().sum().backward()
        want.append(net.weight.grad.clone())
    net.weight.grad = torch.full_like(net.weight, 9.0)  # a stale gradient from the step before
    run = SimpleNamespace(micro=0, optimizer=torch.optim.SGD(net.parameters(), lr=1.0),
                          scaler=torch.amp.GradScaler("cpu", enabled=False),
                          cfg=SimpleNamespace(train=SimpleNamespace(grad_accum=2)))
    for micro, x in enumerate(xs):
        run.micro = micro
        backward(run, net(x).square().sum())  # type: ignore[arg-type]
    torch.testing.assert_close(net.weight.grad, (want[0] + want[1]) / 2)


def test_a_step_reads_the_bank_in_its_loss_before_it_writes_the_batch_into_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """SDC's bank pairs must be the earlier steps' entries: the batch's own go in only after the loss."""
    import stages.training.step as step_module

    events: list[str] = []

    class Bank:
        def update(self, *args: object) -> None:
            events.append("write")

    def terms(run: object, x: object) -> dict[str, torch.Tensor]:
        events.append("read")
        return {"fcd": torch.ones((), requires_grad=True)}

    monkeypatch.setattr(step_module, "step_inputs", lambda run, feats, labels, rows, batch: SimpleNamespace(emb=feats))
    monkeypatch.setattr(step_module, "step_terms", terms)
    monkeypatch.setattr(step_module, "step_stats", lambda x: {})
    monkeypatch.setattr(step_module, "backward", lambda run, loss: events.append("backward"))
    monkeypatch.setattr(step_module, "optimizer_step", lambda run: events.append("optimizer"))
    monkeypatch.setattr(step_module, "advance", lambda run, n: None)
    run = SimpleNamespace(micro=0, cfg=SimpleNamespace(train=SimpleNamespace(grad_accum=1)),
                          device=torch.device("cpu"), autocast_dtype=None, nets={"student": lambda x: x.flatten(1)},
                          dist=SimpleNamespace(world=1, active=False), bank=Bank(), weights={"fcd": 1.0},
                          partial=[], step=0)
    batch = {"images": torch.zeros(2, 4, 4, 3, dtype=torch.uint8), "labels": torch.tensor([0, 1]),
             "rows": torch.tensor([0, 1]), "flips": torch.tensor([0, 0])}
    out = step_module.train_step(run, batch)  # type: ignore[arg-type]
    assert events == ["read", "backward", "write", "optimizer"] and out is not None and run.step == 1
