"""Reading backbone weight files (insightface `backbone.pth`, wrapped checkpoints) and hashing them."""
from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.errors import ConfigError

WRAPPER_KEYS = ("backbone", "state_dict", "model")
STRIP_PREFIXES = ("module.", "backbone.")
SHOWN_KEYS = 5


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of the file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """A plain state_dict, or the one under "backbone" / "state_dict" / "model" (nested wrappers allowed)."""
    for _ in range(3):
        if _is_state_dict(obj):
            return dict(obj)
        if not isinstance(obj, dict):
            break
        inner = next((obj[k] for k in WRAPPER_KEYS if k in obj), None)
        if inner is None:
            break
        obj = inner.state_dict() if isinstance(inner, nn.Module) else inner
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    raise ConfigError(f"weights file {str(path)!r}: no state_dict found (expected a plain state_dict or a dict "
                      f"with one of {', '.join(WRAPPER_KEYS)})")


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a `module.` (DataParallel) or `backbone.` prefix shared by every key."""
    for prefix in STRIP_PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a weights file on CPU and return its backbone state_dict; missing file -> ConfigError naming it.

    Tensor-only files load with `weights_only=True`; files holding other Python objects (training
    checkpoints with RNG states) fall back to a full unpickle, so only load files you trust.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"weights file {str(path)!r} does not exist")
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise ConfigError(f"weights file {str(path)!r} is not a readable torch file: {err}") from err
    return _strip_prefixes(_unwrap(obj, path))


def check_state_dict(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """ConfigError listing a few missing / unexpected / wrongly shaped keys of `state` against `module`.

    BatchNorm `num_batches_tracked` buffers may be absent (older exports drop them).
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} vs model {tuple(v.shape)}"
             for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", wrong)):
        if items:
            more = f" (+{len(items) - SHOWN_KEYS} more)" if len(items) > SHOWN_KEYS else ""
            problems.append(f"{len(items)} {label}: {', '.join(items[:SHOWN_KEYS])}{more}")
    if problems:
        raise ConfigError(f"weights file {source!r} does not fit the model: " + "; ".join(problems))


def load_state_dict_checked(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Check `state` against `module` (see `check_state_dict`), then load it strictly."""
    check_state_dict(module, state, source)
    state = dict(state)
    for key, value in module.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value
    module.load_state_dict(state, strict=True)


def load_backbone_weights(module: nn.Module, path: str | Path) -> str:
    """Load a plain or wrapped state_dict from `path` into `module` (strict); returns the file's sha256."""
    load_state_dict_checked(module, read_state_dict(path), str(path))
    return sha256_file(path)


def output_dim_in_state(module: nn.Module, state: dict[str, torch.Tensor]) -> int | None:
    """Embedding size stored in `state`: first dim of the module's last `.weight` entry, if present."""
    last = [k for k in module.state_dict() if k.endswith(".weight")][-1:]
    if last and last[0] in state and state[last[0]].dim() >= 1:
        return int(state[last[0]].shape[0])
    return None
