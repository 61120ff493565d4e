"""The preprocessing an exported ONNX model carries in its metadata, written by `export`, read by `OnnxEmbedder`.

ONNX `metadata_props` are string key/value pairs. An exported student stores its input side, layout,
colour order, mean and std (model input = (pixel/255 - mean)/std per channel) under `PREPROCESSING_KEYS`,
each value JSON-encoded, so a model file describes its own input without flags. A model without these
keys (any ONNX model not written here) is read with the `[teacher]` preprocessing keys.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from common.errors import ConfigError
from config.choices import COLOR_ORDERS, INPUT_LAYOUTS

PREFIX = "icdface."
PREPROCESSING_KEYS = ("input_size", "input_layout", "color", "mean", "std")


def preprocessing_metadata(input_size: int, layout: str, color: str, mean: Sequence[float],
                           std: Sequence[float]) -> dict[str, str]:
    """The metadata entries (`icdface.<key>` -> JSON text) that describe a model's input."""
    values: dict[str, Any] = {"input_size": int(input_size), "input_layout": layout, "color": color,
                              "mean": [float(m) for m in mean], "std": [float(s) for s in std]}
    return {PREFIX + k: json.dumps(values[k]) for k in PREPROCESSING_KEYS}


def _channel_values(value: Any, where: str) -> list[float]:
    ok = (isinstance(value, list) and len(value) == 3 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value))
    if not ok:
        raise ConfigError(f"{where}: expected 3 finite numbers, got {value!r}")
    return [float(v) for v in value]


def read_preprocessing(metadata: Mapping[str, str], source: str) -> dict[str, Any] | None:
    """The preprocessing stored in `metadata` as {input_size, input_layout, color, mean, std}, or None when
    the model stores none. Some keys present but not all, or a malformed value: ConfigError naming the key."""
    present = [k for k in PREPROCESSING_KEYS if PREFIX + k in metadata]
    if not present:
        return None
    missing = [PREFIX + k for k in PREPROCESSING_KEYS if k not in present]
    if missing:
        raise ConfigError(f"{source}: metadata has {PREFIX}{present[0]} but lacks {', '.join(missing)}")
    values: dict[str, Any] = {}
    for key in PREPROCESSING_KEYS:
        where = f"{source}: metadata key '{PREFIX}{key}'"
        try:
            values[key] = json.loads(metadata[PREFIX + key])
        except json.JSONDecodeError as e:
            raise ConfigError(f"{where} is not JSON: {e}") from None
    size = values["input_size"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"{source}: metadata key '{PREFIX}input_size' must be a positive integer, got {size!r}")
    for key, allowed in (("input_layout", INPUT_LAYOUTS), ("color", COLOR_ORDERS)):
        if values[key] not in allowed:
            raise ConfigError(f"{source}: metadata key '{PREFIX}{key}' is {values[key]!r}, expected one of "
                              f"{', '.join(allowed)}")
    for key in ("mean", "std"):
        values[key] = _channel_values(values[key], f"{source}: metadata key '{PREFIX}{key}'")
    if any(s == 0.0 for s in values["std"]):
        raise ConfigError(f"{source}: metadata key '{PREFIX}std' must be non-zero, got {values['std']}")
    return values
