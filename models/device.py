"""Which torch device a run uses: the one rule for `run.device` (`auto`, `cpu`, `cuda`, `cuda:N`)."""
from __future__ import annotations

import torch

from common.errors import ConfigError


def resolve_device(name: str | torch.device, key: str = "run.device") -> torch.device:
    """`auto` picks CUDA when present; a malformed name or an absent CUDA device is a ConfigError naming `key`."""
    if isinstance(name, torch.device):
        name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"config key '{key}': {name!r} is not a device (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"config key '{key}': {name!r} requested but CUDA is not available")
    return device


def to_device(tensor: torch.Tensor, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A host tensor on `device` without waiting for it: through pinned memory, asynchronously, to a GPU.

    (A copy from pageable host memory to a GPU first waits for the device's queue.) On the CPU, a plain `.to`.
    """
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, dtype, non_blocking=True)
    return tensor.to(device, dtype)
