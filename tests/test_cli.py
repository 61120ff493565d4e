"""`cli.py`: exit statuses and messages for errors that are not the pipeline's own."""
from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import invoke, tiny_settings


def test_a_full_disk_is_exit_1_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import checkpoints.format

    def no_space(obj: Any, f: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "checkpoints" / "x.pt"))

    monkeypatch.setattr(checkpoints.format.torch, "save", no_space)
    code, out, _ = invoke("train", tiny_settings(tmp_path) + ["student.arch=mobilefacenet", "train.steps=2"])
    assert code == 1, out
    assert "No space left on device: " in out and "x.pt" in out and "MiB free" in out
    assert "Traceback" not in out


def test_usage_error_is_exit_2() -> None:
    code, out, _ = invoke("train", ["train.no_such=1"])
    assert code == 2 and "train.no_such" in out and "Traceback" not in out


def test_single_process_commands_refuse_torchrun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    code, out, _ = invoke("evaluate", tiny_settings(tmp_path))
    assert code == 2 and "`evaluate` runs in one process" in out and "extract, train, distill run there" in out
    assert not (tmp_path / "cache").exists()


def test_a_malformed_rank_variable_is_exit_2_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "zero")
    code, out, _ = invoke("train", [])
    assert code == 2 and "RANK" in out and "Traceback" not in out


def test_version_is_the_packages() -> None:
    from click.testing import CliRunner

    import cli
    from common.version import VERSION

    result = CliRunner().invoke(cli.main, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"icdface, version {VERSION}"


def test_the_installed_icdface_command_is_this_cli() -> None:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution("icdface-distill")
    except PackageNotFoundError:
        pytest.skip("the package is not installed (pip install -e .)")
    from common.version import VERSION

    scripts = {e.name: e.value for e in dist.entry_points if e.group == "console_scripts"}
    assert scripts == {"icdface": "cli:main"} and dist.version == VERSION


def test_config_file_default_is_the_folders_pipeline_toml_or_none(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    import cli

    monkeypatch.chdir(tmp_path)
    assert cli.config_file(None) is None  # outside a checkout: the built-in defaults
    assert cli.config_file("my.toml") == "my.toml"
    (tmp_path / "pipeline.toml").write_text("[run]\nseed = 3\n")
    assert cli.config_file(None) == "pipeline.toml"
    result = CliRunner().invoke(cli.main, ["export", "--config", "missing.toml"])
    assert result.exit_code == 2 and "missing.toml" in result.output


def test_an_unwritable_summary_after_the_work_is_exit_1_naming_it(tmp_path: Path) -> None:
    from tests.stages.test_align import photo_set

    photos, landmarks, _ = photo_set(tmp_path, identities=1)
    (tmp_path / "run" / "align.json").mkdir(parents=True)  # the summary's name is taken by a folder
    code, out, _ = invoke("align", [f"run.dir={tmp_path / 'run'}"], str(photos), str(tmp_path / "out"),
                          "--landmarks", str(landmarks), "--workers", "0")
    assert code == 1 and "Traceback" not in out and str(tmp_path / "run" / "align.json") in out
    assert (tmp_path / "out" / "manifest.jsonl").is_file()  # the work itself is done


def test_convert_makes_no_run_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from readers import SyntheticDataset, write_pair_set

    pairs = Path(write_pair_set(SyntheticDataset(2, 2, 16, seed=3, difficulty=1.0), tmp_path / "faces", 20, seed=0))
    monkeypatch.chdir(tmp_path)
    code, out, summary = invoke("convert", [], str(pairs.parent), str(tmp_path / "set" / "train.rec"))
    assert code == 0, out
    assert summary is not None and summary["images"] == 4
    assert not (tmp_path / "runs").exists()


def test_an_os_error_names_the_file_without_claiming_it_was_being_written() -> None:
    from cli import os_error_message

    text = os_error_message(OSError(errno.ELOOP, "Too many levels of symbolic links", "faces/loop.png"))
    assert text == "Too many levels of symbolic links: 'faces/loop.png'"
