"""The process group of a `torchrun` launch, on PyTorch's own distributed package.

`torchrun --nproc_per_node N cli.py distill ...` starts N processes and sets RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT in each; `Dist.from_env` joins them into one process group
(NCCL on CUDA, gloo on the CPU). Without those variables (a plain `python cli.py ...`) it is a
world of one and nothing is initialised, so every caller can use the same code for both.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from common.errors import ConfigError, PipelineError


@dataclass(frozen=True)
class Dist:
    """This process's place in the launch: rank in [0, world), its rank on its machine, the backend."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def main(self) -> bool:
        """Rank 0 writes checkpoints, logs and summaries."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @classmethod
    def from_env(cls, device_type: str) -> Dist:
        """Join the launch's process group (once per process), or a world of one without torchrun's variables."""
        world = env_world()
        if world <= 1:
            return cls()
        rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
        if not 0 <= rank < world:
            raise ConfigError(f"environment variable RANK = {rank} is outside [0, WORLD_SIZE = {world})")
        backend = "nccl" if device_type == "cuda" else "gloo"
        _check_rendezvous()
        if not dist.is_initialized():
            if device_type == "cuda":
                torch.cuda.set_device(local_rank)
            dist.init_process_group(backend=backend)
        return cls(rank, world, local_rank, dist.get_backend())

    def barrier(self) -> None:
        if self.active:
            with peer_errors(self.world):
                dist.barrier()

    def close(self) -> None:
        """Wait for every rank, then leave the process group (at the end of a run)."""
        if self.active and dist.is_initialized():
            with peer_errors(self.world):
                dist.barrier()
            dist.destroy_process_group()

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's `tensor` [n_r, ...] concatenated in rank order (sizes may differ between ranks)."""
        if not self.active:
            return tensor
        with peer_errors(self.world):
            return self._all_gather(tensor)

    def _all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        sizes = [torch.zeros(1, dtype=torch.int64, device=tensor.device) for _ in range(self.world)]
        dist.all_gather(sizes, torch.tensor([tensor.shape[0]], dtype=torch.int64, device=tensor.device))
        counts = [int(s.item()) for s in sizes]
        longest = max(counts)
        padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
        padded[:tensor.shape[0]] = tensor
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded)
        return torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)])


@contextlib.contextmanager
def peer_errors(world: int) -> Iterator[None]:
    """A collective that fails because another process of the launch died or lost its connection (gloo
    and NCCL raise RuntimeError with many lines) -> one PipelineError line; the dead rank's own log
    says why it stopped."""
    try:
        yield
    except RuntimeError as e:
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise PipelineError(f"another process of this launch (world of {world}) stopped or lost its connection "
                            f"during a collective: {first[:300]}; see that rank's output for why") from None


def _check_rendezvous() -> None:
    """ConfigError naming the variable unless MASTER_ADDR is set and MASTER_PORT is a port number."""
    if not os.environ.get("MASTER_ADDR"):
        raise ConfigError("environment variable MASTER_ADDR is not set: with WORLD_SIZE > 1, start the command "
                          "with torchrun (it sets MASTER_ADDR and MASTER_PORT)")
    port = os.environ.get("MASTER_PORT", "")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"environment variable MASTER_PORT = {port!r} is not a port number (1..65535)")


def env_world() -> int:
    """The number of processes torchrun started (1 without torchrun)."""
    return _env_int("WORLD_SIZE", 1)


def env_rank() -> int:
    """This process's global rank as torchrun set it (0 without torchrun): only rank 0 logs at INFO and
    prints the JSON summary."""
    rank = _env_int("RANK", 0)
    if rank != 0 and _env_int("WORLD_SIZE", 1) <= 1:
        raise ConfigError(f"environment variable RANK = {rank} without WORLD_SIZE > 1 (a leftover of another "
                          "launch?): unset RANK, or start the command with torchrun")
    return rank


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name} = {value!r} is not an integer") from None


def device_for(device: torch.device, dist_: Dist) -> torch.device:
    """`run.device` of one rank: a bare `cuda` becomes this process's GPU, `cuda:LOCAL_RANK`."""
    if dist_.active and device.type == "cuda" and device.index is None:
        return torch.device("cuda", dist_.local_rank)
    return device
