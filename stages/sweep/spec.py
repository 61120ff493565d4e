"""The sweep file: which variants to train, on which seeds, and which one the others are compared with.

A TOML file::

    baseline = "fcd"                  # the variant every other one is compared with
    seeds = [0, 1, 2]                 # run.seed of each repetition
    [variants.fcd]
    set = ["loss.sdc_weight=0.0"]     # `--set` overrides, applied over the command line's config
    [variants.fcd_icd]                # no `set`: the config as given
    [variants.no_kd]
    command = "train"                 # "distill" (the default) or "train" (margin loss only, no teacher)

Variant names are folder names (letters, digits, `_`, `-`, `.`); every problem is a ConfigError naming
the file and the key.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import ConfigError

SWEEP_COMMANDS = ("distill", "train")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
# the sweep's own files in its run.dir, which a variant's folder must not take
RESERVED_NAMES = ("sweep.toml", "sweep.md", "sweep.json", "sweep.log", "roc.png", "config.toml")


@dataclass
class Variant:
    """One recipe: the command that trains it and its `--set` overrides."""

    name: str
    command: str = "distill"
    overrides: list[str] = field(default_factory=list)


@dataclass
class SweepSpec:
    """The parsed sweep file (module docstring)."""

    source: Path
    variants: dict[str, Variant]
    seeds: list[int]
    baseline: str
    text: str


def _variant(path: Path, name: str, table: Any) -> Variant:
    where = f"sweep file '{path}': variants.{name}"
    if not _NAME.match(name):
        raise ConfigError(f"{where}: a variant name must be a plain folder name (letters, digits, _ - .)")
    if name.lower() in RESERVED_NAMES:
        raise ConfigError(f"{where}: the name is one of the sweep's own files ({', '.join(RESERVED_NAMES)}); "
                          "choose another")
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table [variants.{name}]")
    unknown = sorted(set(table) - {"command", "set"})
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key (valid: command, set)")
    command = table.get("command", "distill")
    if command not in SWEEP_COMMANDS:
        raise ConfigError(f"{where}.command: expected one of {', '.join(SWEEP_COMMANDS)}, got {command!r}")
    overrides = table.get("set", [])
    if not isinstance(overrides, list) or not all(isinstance(s, str) for s in overrides):
        raise ConfigError(f"{where}.set: expected a list of 'section.key=value' strings, got {overrides!r}")
    return Variant(name, command, list(overrides))


def _seeds(path: Path, value: Any) -> list[int]:
    if (not isinstance(value, list) or not value
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value)):
        raise ConfigError(f"sweep file '{path}': seeds: expected a non-empty list of integers >= 0, got {value!r}")
    if len(set(value)) != len(value):
        raise ConfigError(f"sweep file '{path}': seeds: {value!r} lists a seed twice")
    return list(value)


def read_sweep(path: str | Path) -> SweepSpec:
    """Parse and check a sweep file (module docstring)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        table = tomllib.loads(text)
    except OSError as e:
        raise ConfigError(f"cannot read sweep file '{path}': {e.strerror or e}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"sweep file '{path}': {e}") from None
    unknown = sorted(set(table) - {"baseline", "seeds", "variants"})
    if unknown:
        raise ConfigError(f"sweep file '{path}': unknown key '{unknown[0]}' (valid: baseline, seeds, variants)")
    raw = table.get("variants")
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"sweep file '{path}': variants: expected one [variants.<name>] table or more")
    variants = {name: _variant(path, name, v) for name, v in raw.items()}
    baseline = table.get("baseline", next(iter(variants)))
    if baseline not in variants:
        raise ConfigError(f"sweep file '{path}': baseline {baseline!r} is not one of the variants "
                          f"({', '.join(variants)})")
    return SweepSpec(path, variants, _seeds(path, table.get("seeds", [0])), baseline, text)
