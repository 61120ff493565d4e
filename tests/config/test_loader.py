"""`config.loader`: TOML into dataclasses, overrides, rejection of unknown keys and wrong types, hashing."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from common.errors import ConfigError
from config import PipelineConfig, config_from_dict, config_hash, load_config, save_resolved, to_dict, to_toml
from tests.conftest import REPO


def test_repo_pipeline_toml_loads() -> None:
    cfg = load_config(REPO / "pipeline.toml")
    assert cfg.data.format == "synthetic"


def test_overrides_are_toml_values_or_plain_strings(tmp_path: Path) -> None:
    cfg = load_config(None, ["train.steps=7", "loss.scale=32", "data.root=/data/faces", "teacher.mean=[0, 0, 0]",
                             'teacher.input_layout="NHWC"', 'icd.pairs="bank"'])
    assert cfg.train.steps == 7
    assert cfg.loss.scale == 32.0 and isinstance(cfg.loss.scale, float)
    assert cfg.data.root == "/data/faces"
    assert cfg.teacher.mean == [0.0, 0.0, 0.0]
    assert cfg.teacher.input_layout == "NHWC"
    assert cfg.icd.pairs == "bank"


def test_nested_synthetic_override() -> None:
    cfg = load_config(None, ["data.synthetic.identities=5"])
    assert cfg.data.synthetic.identities == 5


@pytest.mark.parametrize("override, needle", [
    ("train.bogus=1", "train.bogus"),
    ("nosuch.key=1", "nosuch"),
    ("train.steps=\"ten\"", "train.steps"),
    ("train.steps=1.5", "train.steps"),
    ("icd.pairs=1", "icd.pairs"),
    ('icd.pairs="neither"', "icd.pairs"),
    ('train.positive_policy="hardest"', "train.positive_policy"),
    ("loss.head=\"sphereface\"", "loss.head"),
    ("teacher.mean=[1, 2]", "teacher.mean"),
    ("data.image_size=100", "data.image_size"),
    ("train.images_per_identity=1", "train.images_per_identity"),
    ("steps=3", "section.key"),
])
def test_bad_overrides_name_the_key(override: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(None, [override])


def test_unknown_key_in_file_lists_valid_keys(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text("[train]\nstep = 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    assert "train.step" in str(e.value) and "steps" in str(e.value)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\n")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_config(bad)


def test_resolved_config_round_trips_and_hash_is_stable(tmp_path: Path) -> None:
    cfg = load_config(None, ["train.steps=11", "eval.pairs=[\"a.txt\", \"b.bin\"]"])
    path = save_resolved(cfg, tmp_path)
    again = load_config(path)
    assert again == cfg
    assert config_hash(again) == config_hash(cfg)
    assert config_hash(load_config(None, ["train.steps=12"])) != config_hash(cfg)
    assert tomllib.loads(to_toml(cfg))["train"]["steps"] == 11
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("setting, message", [
    ("train.lr=nan", "'train.lr': nan is not a finite number"),
    ("train.grad_clip=nan", "'train.grad_clip': nan is not a finite number"),
    ("train.epochs=inf", "'train.epochs': inf is not a finite number"),
    ("teacher.std=[0.5, inf, 0.5]", "'teacher.std[1]'"),
    ("train.log_every=0", "'train.log_every': 0 must be >= 1"),
    ("train.checkpoint_every=0", "'train.checkpoint_every': 0 must be >= 1"),
    ("data.workers=-1", "'data.workers': -1 must be >= 0"),
    ("teacher.batch_size=0", "'teacher.batch_size': 0 must be >= 1"),
    ("cache.positives_k=-2", "'cache.positives_k': -2 must be >= 1"),
    ("icd.grid_step=1e-9", "'icd.grid_step'"),
    ("train.lr=0", "'train.lr': 0.0 must be > 0"),
    ("train.steps=0", "'train.steps' and 'train.epochs' are both 0"),
])
def test_bad_numbers_are_refused_at_load_time_naming_the_key(setting: str, message: str) -> None:
    extra = ["train.epochs=0"] if setting.startswith("train.steps") else []
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(REPO / "pipeline.toml", [setting, *extra])


@pytest.mark.parametrize("sigma, step", [(0.005, 0.01), (0.001, 0.01), (0.05, 0.1)])
def test_sigma_below_one_grid_step_is_refused_naming_both_keys(sigma: float, step: float) -> None:
    with pytest.raises(ConfigError, match=r"'icd\.sigma'.*'icd\.grid_step'"):
        load_config(REPO / "pipeline.toml", [f"icd.sigma={sigma}", f"icd.grid_step={step}"])
    assert load_config(None, [f"icd.sigma={step}", f"icd.grid_step={step}"]).icd.sigma == step


@pytest.mark.parametrize("key", ["in_batch", "use_bank"])
def test_replaced_pair_switches_are_refused_with_their_replacement(tmp_path: Path, key: str) -> None:
    f = tmp_path / "old.toml"
    f.write_text(f"[icd]\n{key} = true\n")
    with pytest.raises(ConfigError, match=rf"'icd\.{key}' was replaced by icd\.pairs"):
        load_config(f)
    with pytest.raises(ConfigError, match=rf"'icd\.{key}' was replaced by icd\.pairs"):
        load_config(None, [f"icd.{key}=false"])


@pytest.mark.parametrize("in_batch, use_bank, pairs", [(True, True, "both"), (True, False, "batch"),
                                                       (False, True, "bank")])
def test_stored_configs_of_earlier_versions_read_their_pair_switches(in_batch: bool, use_bank: bool,
                                                                     pairs: str) -> None:
    table = to_dict(PipelineConfig())
    del table["icd"]["pairs"]
    table["icd"].update(in_batch=in_batch, use_bank=use_bank)
    assert config_from_dict(table, source="old.pt").icd.pairs == pairs
    table["icd"].update(in_batch=False, use_bank=False)
    with pytest.raises(ConfigError, match="old.pt.*icd.in_batch"):
        config_from_dict(table, source="old.pt")


def test_apply_overrides_copies_and_checks_like_set() -> None:
    from config import apply_overrides

    base = load_config(None, ["train.lr=0.2"])
    out = apply_overrides(base, ["loss.sdc_weight=0.0", 'icd.pairs="both"'], "variant v")
    assert (out.loss.sdc_weight, out.icd.pairs, out.train.lr) == (0.0, "both", 0.2)
    assert base.loss.sdc_weight == 1.0 and base.icd.pairs == "bank"  # the original is untouched
    with pytest.raises(ConfigError, match="variant v: unknown config key 'loss.sdc_wieght'"):
        apply_overrides(base, ["loss.sdc_wieght=0.0"], "variant v")
    with pytest.raises(ConfigError, match="variant v: config keys 'icd.sigma'"):
        apply_overrides(base, ["icd.sigma=0.001"], "variant v")
