"""Reading backbone weight files (insightface `backbone.pth`, wrapped checkpoints) and hashing them."""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import pickle
import re
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from common.errors import ConfigError

WRAPPER_KEYS = ("backbone", "state_dict", "model", "state_dict_backbone")  # the last: arcface_torch checkpoint_gpu_*.pt
STRIP_PREFIXES = ("module.", "backbone.")
SHOWN_KEYS = 5
# Globals the restricted unpickler may build besides its own: plain attribute holders, never callables.
SAFE_GLOBALS = (argparse.Namespace,)


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
        obj = inner
    raise ConfigError(f"weights file {str(path)!r}: no state_dict found (expected a plain state_dict or a dict "
                      f"with one of {', '.join(WRAPPER_KEYS)})")


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a `module.` (DataParallel) or `backbone.` prefix shared by every key."""
    for prefix in STRIP_PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _unpickler_error(path: Path, err: Exception) -> ConfigError:
    """ConfigError for a file the restricted unpickler stopped on: a refused global, or a malformed pickle.

    torch's own message advises `weights_only=False`; only its diagnosis is kept.
    """
    text = str(err)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return ConfigError(
            f"weights file {str(path)!r} holds Python objects other than tensors and plain containers (it needs "
            f"{found.group(1)}); it is not loaded because unpickling them could run code. If you trust the file, "
            "load it in a trusted Python session and save the backbone's `model.state_dict()` with torch.save, "
            "then use that file")
    detail = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", text, re.S)
    reason = detail.group(1).strip() if detail else (text.strip().splitlines() or [type(err).__name__])[0]
    return ConfigError(f"weights file {str(path)!r} is not a readable torch file: {reason}")


def _safe_globals() -> contextlib.AbstractContextManager[Any]:
    """`SAFE_GLOBALS` allowed for the duration of one load (torch 2.4, without the scoped form: for the process)."""
    scoped = getattr(torch.serialization, "safe_globals", None)
    if scoped is not None:
        return cast("contextlib.AbstractContextManager[Any]", scoped(list(SAFE_GLOBALS)))
    torch.serialization.add_safe_globals(list(SAFE_GLOBALS))
    return contextlib.nullcontext()


def read_torch_file(path: str | Path) -> Any:
    """What a torch file holds, loaded on CPU; missing or refused file -> ConfigError naming it.

    Files are only ever read with torch's restricted unpickler (`weights_only=True`): tensors, numbers,
    strings and containers, plus `SAFE_GLOBALS` (the `args` namespace timm training checkpoints store).
    A file needing any other global (a pickled model object, or code) is refused with a ConfigError
    saying how to convert it; nothing in it runs.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"weights file {str(path)!r} does not exist")
    try:
        with _safe_globals():
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise _unpickler_error(path, err) from None
    except Exception as err:
        raise ConfigError(f"weights file {str(path)!r} is not a readable torch file: {err}") from None
    return obj


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The backbone state_dict of a weights file (`read_torch_file`, then unwrapped and de-prefixed)."""
    return _strip_prefixes(_unwrap(read_torch_file(path), Path(path)))


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
