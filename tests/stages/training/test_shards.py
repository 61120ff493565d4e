"""`stages.training.shards`: a rank takes its own rows of a whole-matrix checkpoint (the gathering side and
the sharded runs are in test_distributed_loop.py)."""
from __future__ import annotations

from types import SimpleNamespace

import torch

from losses import MarginHead
from stages.training.shards import local_head_state, sharded_head


def _run(rank: int, world: int) -> SimpleNamespace:
    student = torch.nn.Linear(3, 4)
    head = MarginHead(4, 11, rank=rank, world=world)
    modules = {"student": student, "head": head}
    return SimpleNamespace(modules=modules, parameters=lambda: [q for m in modules.values() for q in m.parameters()])


def test_each_rank_takes_its_rows_of_the_weight_and_of_its_optimiser_state() -> None:
    whole = torch.arange(44.0).reshape(11, 4)
    for rank, rows in ((0, range(0, 6)), (1, range(6, 11))):
        run = _run(rank, 2)
        assert run.modules["head"].weight.shape == (len(rows), 4)
        state = {"modules": {"head": {"weight": whole.clone()}},
                 "optimizer": {"state": {0: {"momentum_buffer": torch.ones(4, 3)},
                                         2: {"momentum_buffer": whole.clone() + 100, "step": torch.tensor(3.0)}}}}
        local_head_state(run, state)
        assert torch.equal(state["modules"]["head"]["weight"], whole[list(rows)])
        assert torch.equal(state["optimizer"]["state"][2]["momentum_buffer"], whole[list(rows)] + 100)
        assert state["optimizer"]["state"][0]["momentum_buffer"].shape == (4, 3)  # the student's, untouched
        assert float(state["optimizer"]["state"][2]["step"]) == 3.0
        assert sharded_head(run) is run.modules["head"]


def test_one_process_keeps_the_whole_matrix() -> None:
    run = _run(0, 1)
    whole = torch.randn(11, 4)
    state = {"modules": {"head": {"weight": whole}}, "optimizer": {"state": {}}}
    local_head_state(run, state)
    assert state["modules"]["head"]["weight"] is whole and sharded_head(run) is None
