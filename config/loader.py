"""Read `pipeline.toml` into `PipelineConfig`, apply `--set` overrides, validate, hash and save."""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import tomllib
import typing
from pathlib import Path
from typing import Any

from common.errors import ConfigError
from config.choices import (
    CHOICES,
    RANGES,
    check_bandwidth,
    check_choice,
    check_image_side,
    check_method_settings,
    check_range,
)
from config.schema import PipelineConfig


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce_number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"config key '{key}': {value!r} is not a finite number")
    return float(value)


# scalar type -> (the Python types it accepts, what the error calls it); bool is never an int here
_SCALARS: dict[Any, tuple[tuple[type, ...], str]] = {
    int: ((int,), "an integer"),
    bool: ((bool,), "true or false"),
    str: ((str,), "a string"),
}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; ints are accepted where floats are expected."""
    if typing.get_origin(tp) is list:
        (item_tp,) = typing.get_args(tp)
        if item_tp is str and isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}': expected a list of {_type_name(item_tp)}, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is float:
        return _coerce_number(value, key)
    if tp not in _SCALARS:
        raise ConfigError(f"config key '{key}': unsupported type {tp}")  # pragma: no cover
    accepted, name = _SCALARS[tp]
    if not isinstance(value, accepted) or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"config key '{key}': expected {name}, got {value!r}")
    return value


# keys of earlier versions -> what replaced them (a config that still sets one is refused with this hint)
REPLACED_KEYS = {
    "icd.in_batch": 'icd.pairs = "both" | "batch" | "bank" (in_batch and use_bank both true: "both")',
    "icd.use_bank": 'icd.pairs = "both" | "batch" | "bank" (in_batch and use_bank both true: "both")',
}


def _fill(obj: Any, table: dict[str, Any], prefix: str) -> None:
    hints = typing.get_type_hints(type(obj))
    fields = {f.name: f for f in dataclasses.fields(obj)}
    for name, value in table.items():
        key = f"{prefix}{name}"
        if key in REPLACED_KEYS:
            raise ConfigError(f"config key '{key}' was replaced by {REPLACED_KEYS[key]}")
        if name not in fields:
            valid = ", ".join(sorted(fields))
            section = prefix.rstrip(".") or "top level"
            raise ConfigError(f"unknown config key '{key}' (valid keys in [{section}]: {valid})")
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{key}': expected a table [{key}], got {value!r}")
            _fill(getattr(obj, name), value, f"{key}.")
        else:
            setattr(obj, name, _coerce(value, tp, key))


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"--set '{text}': expected section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    parts = key.split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"--set '{text}': key must be section.key (for example train.steps=100)")
    return parts, value


def _nest(parts: list[str], value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {parts[-1]: value}
    for p in reversed(parts[:-1]):
        out = {p: out}
    return out


def value_at(cfg: PipelineConfig, key: str) -> Any:
    """The value of a dotted config key (`train.lr`, `data.synthetic.seed`)."""
    obj: Any = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def derive(cfg: PipelineConfig, changes: dict[str, Any]) -> PipelineConfig:
    """A validated copy of `cfg` with `{"section.key": value}` (or `section.sub.key`) changes."""
    out = copy.deepcopy(cfg)
    for dotted, value in changes.items():
        parts = dotted.split(".")
        obj: Any = out
        for p in parts[:-1]:
            obj = getattr(obj, p)
        if not hasattr(obj, parts[-1]):
            raise KeyError(dotted)
        setattr(obj, parts[-1], value)
    validate(out)
    return out


def validate(cfg: PipelineConfig) -> None:
    """Check enumerated choices and value ranges, naming the offending key."""
    for key, choices in CHOICES.items():
        check_choice(value_at(cfg, key), choices, key)
    for key, allowed in RANGES.items():
        check_range(value_at(cfg, key), allowed, key)
    check_image_side(cfg.data.image_size, "data.image_size")
    check_image_side(cfg.demo.image_size, "demo.image_size")
    check_bandwidth(cfg.icd.sigma, cfg.icd.grid_step)
    check_method_settings(cfg.ekd.fprs, cfg.margindistillation.margin_min, cfg.margindistillation.margin_max)
    if not (cfg.train.steps or cfg.train.epochs):
        raise ConfigError("config keys 'train.steps' and 'train.epochs' are both 0: set one of them")
    for key in ("teacher.mean", "teacher.std"):
        section, name = key.split(".")
        if len(getattr(cfg.teacher, name)) != 3:
            raise ConfigError(f"config key '{key}': expected 3 per-channel values")
    if any(s == 0 for s in cfg.teacher.std):
        raise ConfigError("config key 'teacher.std': values must be non-zero")


def load_config(path: str | os.PathLike[str] | None = "pipeline.toml",
                overrides: typing.Sequence[str] = ()) -> PipelineConfig:
    """Build the config from defaults, then the TOML file (if any), then `--set` overrides."""
    cfg = PipelineConfig()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file '{p}' not found")
        try:
            table = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file '{p}': {e}") from None
        _fill(cfg, table, "")
    for text in overrides:
        parts, value = _parse_override(text)
        _fill(cfg, _nest(parts, value), "")
    validate(cfg)
    return cfg


def stored_pair_sources(icd: dict[str, Any]) -> dict[str, Any]:
    """The `[icd]` table of a stored config with the retired `in_batch` / `use_bank` switches as `pairs`."""
    if "in_batch" not in icd and "use_bank" not in icd:
        return icd
    out = {k: v for k, v in icd.items() if k not in ("in_batch", "use_bank")}
    sources = (bool(icd.get("in_batch", True)), bool(icd.get("use_bank", True)))
    named = {(True, True): "both", (True, False): "batch", (False, True): "bank"}
    if sources not in named:
        raise ConfigError("config keys 'icd.in_batch' and 'icd.use_bank' are both false: no pair source")
    out["pairs"] = named[sources]
    return out


def config_from_dict(table: dict[str, Any], source: str = "stored config") -> PipelineConfig:
    """Rebuild a validated config from its dict form (as stored in checkpoints, older versions' keys read too)."""
    cfg = PipelineConfig()
    try:
        if isinstance(table.get("icd"), dict):
            table = {**table, "icd": stored_pair_sources(table["icd"])}
        _fill(cfg, table, "")
        validate(cfg)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def to_toml(cfg: PipelineConfig) -> str:
    """Serialise the resolved config as TOML (sections and one level of sub-tables)."""

    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        raise TypeError(type(v))

    lines: list[str] = []

    def emit(name: str, table: dict[str, Any]) -> None:
        lines.append(f"[{name}]")
        subs = []
        for k, v in table.items():
            if isinstance(v, dict):
                subs.append((k, v))
            else:
                lines.append(f"{k} = {fmt(v)}")
        lines.append("")
        for k, v in subs:
            emit(f"{name}.{k}", v)

    for section, table in to_dict(cfg).items():
        emit(section, table)
    return "\n".join(lines)


def config_hash(cfg: PipelineConfig | dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the resolved config."""
    d = cfg if isinstance(cfg, dict) else to_dict(cfg)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def save_resolved(cfg: PipelineConfig, directory: str | os.PathLike[str], name: str = "config.toml") -> Path:
    """Write the resolved config next to an output, atomically; returns its path."""
    from common.atomic import atomic_write_text

    out = Path(directory) / name
    atomic_write_text(out, to_toml(cfg))
    return out


__all__ = ["load_config", "apply_overrides", "derive", "config_from_dict", "validate", "value_at", "to_dict", "to_toml",
           "config_hash", "save_resolved"]


def apply_overrides(cfg: PipelineConfig, overrides: typing.Sequence[str], source: str = "--set") -> PipelineConfig:
    """A validated copy of `cfg` with `section.key=value` overrides (as `--set` reads them); a ConfigError
    names `source` and the key."""
    table = to_dict(cfg)
    out = PipelineConfig()
    try:
        _fill(out, table, "")
        for text in overrides:
            parts, value = _parse_override(text)
            _fill(out, _nest(parts, value), "")
        validate(out)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return out
