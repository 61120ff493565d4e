"""Training checkpoints: atomic save, safe load, latest/prune by step, and RNG state capture."""
from __future__ import annotations

import contextlib
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from config.atomic import atomic_path
from config.errors import ConfigError

_NAME = re.compile(r"^checkpoint_(\d{8,})\.pt$")


def checkpoint_path(directory: str | os.PathLike[str], step: int) -> Path:
    """`<directory>/checkpoint_<step:08d>.pt`."""
    return Path(directory) / f"checkpoint_{int(step):08d}.pt"


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """torch.save `state` to a temporary file beside `path`, fsync, rename over `path`.

    On any error (including an interrupt) neither `path` nor the temporary file is left changed.
    Saving through a file object keeps the archive's internal name fixed, so the same state gives
    the same bytes (and sha256) whatever the temporary file was called.
    """
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(state, fh)
    _fsync_dir(path.parent)
    return path


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu", weights_only: bool = True
) -> dict[str, Any]:
    """Load a checkpoint dict; a missing or unreadable file is a ConfigError naming it.

    `weights_only=True` (default) uses torch's restricted unpickler: tensors, numbers, strings and
    containers, which is all `save_checkpoint` callers and `capture_rng` store.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=weights_only)
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError, ... on bad files
        raise ConfigError(f"checkpoint {path} is corrupt or unreadable: {exc}") from exc
    if not isinstance(state, dict):
        raise ConfigError(f"checkpoint {path} holds a {type(state).__name__}, expected a dict")
    return state


def list_checkpoints(directory: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """(step, path) of every `checkpoint_<step>.pt` in `directory`, by increasing step."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for entry in directory.iterdir():
        match = _NAME.match(entry.name)
        if match and entry.is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def latest_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """The checkpoint with the highest step in `directory`, or None."""
    found = list_checkpoints(directory)
    return found[-1][1] if found else None


def prune_checkpoints(directory: str | os.PathLike[str], keep: int = 2) -> list[Path]:
    """Delete all but the `keep` highest-step checkpoints; returns the deleted paths."""
    if keep < 1:
        raise ConfigError(f"prune_checkpoints: keep must be >= 1, got {keep}")
    found = list_checkpoints(directory)
    removed = [path for _, path in found[:-keep]]
    for path in removed:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return removed


def capture_rng() -> dict[str, Any]:
    """States of python `random`, numpy's global generator, torch CPU and every CUDA device.

    Stored as tensors, numbers and tuples only, so `load_checkpoint(weights_only=True)` accepts them.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "python": random.getstate(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Restore what `capture_rng` captured; CUDA states go to as many devices as both sides have."""
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    np_state = state["numpy"]
    keys = np.asarray(torch.as_tensor(np_state["keys"]).numpy(), dtype=np.uint32)
    np.random.set_state((np_state["kind"], keys, int(np_state["pos"]), int(np_state["has_gauss"]),
                         float(np_state["cached_gaussian"])))
    torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8).cpu())
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available():
        for device, cuda_state in enumerate(cuda_states[:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(torch.as_tensor(cuda_state, dtype=torch.uint8).cpu(), device)
