"""`common.distributed`: a world of one without torchrun's variables, clear errors for bad ones, and an
all-gather of unequal parts in rank order over a real two-process gloo group."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from common.distributed import Dist, device_for, env_rank
from common.errors import ConfigError, PipelineError


def test_without_torchrun_it_is_a_world_of_one(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    d = Dist.from_env("cpu")
    assert (d.rank, d.world, d.main, d.active) == (0, 1, True, False) and env_rank() == 0
    x = torch.arange(3)
    assert d.all_gather(x) is x
    d.barrier()
    d.close()
    assert device_for(torch.device("cuda"), d) == torch.device("cuda")


def test_bad_launch_variables_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match="WORLD_SIZE"):
        Dist.from_env("cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(ConfigError, match="RANK = 5"):
        Dist.from_env("cpu")


def test_a_launch_without_its_rendezvous_or_with_a_stray_rank_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ConfigError, match="MASTER_ADDR is not set"):
        Dist.from_env("cpu")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "notaport")
    with pytest.raises(ConfigError, match="MASTER_PORT = 'notaport'"):
        Dist.from_env("cpu")
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ConfigError, match="RANK = 1 without WORLD_SIZE"):
        env_rank()


def test_a_rank_takes_its_local_gpu() -> None:
    assert device_for(torch.device("cuda"), Dist(3, 4, 1, "nccl")) == torch.device("cuda", 1)
    assert device_for(torch.device("cuda:0"), Dist(3, 4, 1, "nccl")) == torch.device("cuda", 0)


def _gather(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    d = Dist.from_env("cpu")
    part = torch.full((rank + 1, 2), float(rank))  # rank 0 sends 1 row, rank 1 sends 2
    got = d.all_gather(part)
    torch.save(got, Path(out) / f"rank{rank}.pt")
    d.close()


def test_all_gather_joins_unequal_parts_in_rank_order(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_gather, args=(port, str(tmp_path)), nprocs=2, join=True)
    want = torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    for rank in (0, 1):
        assert torch.equal(torch.load(tmp_path / f"rank{rank}.pt"), want)


def _peer_dies(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    d = Dist.from_env("cpu")
    if rank == 1:
        os._exit(0)  # the peer is gone without a word
    try:
        d.all_gather(torch.zeros(1, 2))
    except PipelineError as e:
        (Path(out) / "message.txt").write_text(str(e))


def test_a_peer_that_dies_is_one_line_on_the_survivor(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_peer_dies, args=(port, str(tmp_path)), nprocs=2, join=True)
    message = (tmp_path / "message.txt").read_text()
    assert message.startswith("another process of this launch (world of 2) stopped") and "\n" not in message
