"""The checkpoint file: atomic save, safe load, `checkpoint_<step>.pt` naming, latest and prune by step."""
from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any

import torch

from common.atomic import atomic_path
from common.errors import ConfigError

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


def nonfinite_entries(state: Any, prefix: str = "") -> list[str]:
    """Dotted names of the floating-point tensors in a nested dict/list/tuple that hold NaN or inf."""
    if isinstance(state, torch.Tensor):
        bad = state.is_floating_point() and not bool(torch.isfinite(state).all())
        return [prefix or "<tensor>"] if bad else []
    if isinstance(state, dict):
        items: list[tuple[str, Any]] = [(str(k), v) for k, v in state.items()]
    elif isinstance(state, (list, tuple)):
        items = [(str(i), v) for i, v in enumerate(state)]
    else:
        return []
    return [name for k, v in items for name in nonfinite_entries(v, f"{prefix}.{k}" if prefix else k)]


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


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict; a missing or unreadable file is a ConfigError naming it.

    Always through torch's restricted unpickler (`weights_only=True`): tensors, numbers, strings and
    containers, which is all `save_checkpoint` callers and `capture_rng` store; nothing in the file runs.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
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
