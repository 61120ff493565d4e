"""`stages.sweep.spec`: the sweep file and its errors."""
from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import ConfigError
from stages.sweep.spec import read_sweep


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_sweep_file_is_read_with_its_defaults(tmp_path: Path) -> None:
    spec = read_sweep(_write(tmp_path, 'seeds = [3, 1]\n[variants.fcd]\nset = ["loss.sdc_weight=0.0"]\n'
                                       '[variants.no_kd]\ncommand = "train"\n'))
    assert list(spec.variants) == ["fcd", "no_kd"] and spec.baseline == "fcd" and spec.seeds == [3, 1]
    assert spec.variants["fcd"].overrides == ["loss.sdc_weight=0.0"] and spec.variants["fcd"].command == "distill"
    assert spec.variants["no_kd"].command == "train" and spec.variants["no_kd"].overrides == []
    assert read_sweep(_write(tmp_path, "[variants.a]\n")).seeds == [0]


@pytest.mark.parametrize(("text", "message"), [
    ("[variants.a]\nsets = []\n", "variants.a.sets: unknown key"),
    ('[variants.a]\ncommand = "evaluate"\n', "variants.a.command"),
    ("[variants.a]\nset = 'loss.sdc_weight=0'\n", "variants.a.set"),
    ('[variants."../x"]\n', "plain folder name"),
    ('[variants."sweep.md"]\n', "the sweep's own files"),
    ('[variants."Config.toml"]\n', "the sweep's own files"),
    ("seeds = []\n[variants.a]\n", "seeds"),
    ("seeds = [1, 1]\n[variants.a]\n", "lists a seed twice"),
    ("seeds = [true]\n[variants.a]\n", "seeds"),
    ('baseline = "b"\n[variants.a]\n', "baseline 'b'"),
    ("seed = [0]\n[variants.a]\n", "unknown key 'seed'"),
    ("seeds = [0]\n", "variants"),
    ("[variants\n", "sweep file"),
])
def test_a_bad_sweep_file_is_a_config_error_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match="sweep file") as err:
        read_sweep(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_a_missing_sweep_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read sweep file"):
        read_sweep(tmp_path / "absent.toml")
