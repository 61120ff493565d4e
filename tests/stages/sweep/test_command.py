"""`cli.py sweep` end to end on a tiny cache: runs, comparisons with the baseline, report, and a rerun that
trains nothing again."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from checkpoints import latest_checkpoint, load_checkpoint
from common.errors import ConfigError
from config import load_config
from stages.sweep.command import variant_config
from stages.sweep.spec import read_sweep
from tests.conftest import invoke, tiny_settings

SWEEP = """baseline = "fcd"
seeds = [0, 1]
[variants.fcd]
set = ["loss.sdc_weight=0.0"]
[variants.no_kd]
command = "train"
"""


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory, teacher_weights: Path,
          pair_sets: tuple[Path, Path]) -> tuple[Path, list[str], Path, dict]:
    root = tmp_path_factory.mktemp("sweep")
    settings = tiny_settings(root / "cache_run", teacher_weights)
    assert invoke("extract", settings)[0] == 0
    sweep_file = root / "sweep.toml"
    sweep_file.write_text(SWEEP, encoding="utf-8")
    txt, binf = pair_sets
    settings = settings + [f"cache.path={root / 'cache_run' / 'cache' / 'teacher.h5'}", f"run.dir={root / 'out'}",
                           "train.steps=2", "eval.n_boot=30", f"eval.pairs=[\"{txt}\", \"{binf}\"]"]
    code, out, summary = invoke("sweep", settings, str(sweep_file))
    assert code == 0, out
    assert summary is not None
    return root / "out", settings, sweep_file, summary


def test_every_variant_and_seed_is_trained_and_evaluated(swept: tuple[Path, list[str], Path, dict]) -> None:
    out, _, _, summary = swept
    assert set(summary["runs"]) == {f"{v}/seed{s}" for v in ("fcd", "no_kd") for s in (0, 1)}
    for tag, run in summary["runs"].items():
        assert Path(run["run_dir"]) == out / run["variant"] / f"seed{run['seed']}", tag
        assert set(run["sets"]) == {"heldout", "heldout.bin"}
        assert load_config(Path(run["run_dir"]) / "config.toml").run.seed == run["seed"]
    assert load_config(out / "fcd" / "seed0" / "config.toml").loss.sdc_weight == 0.0
    commands = {v: load_checkpoint(latest_checkpoint(out / v / "seed1" / "checkpoints"))["command"]
                for v in ("fcd", "no_kd")}
    assert commands == {"fcd": "distill", "no_kd": "train"}
    assert "teacher" in summary and set(summary["teacher"]) == {"heldout", "heldout.bin"}


def test_runs_report_their_gap_to_the_teacher_and_training_compactness(
        swept: tuple[Path, list[str], Path, dict]) -> None:
    out, _, _, summary = swept
    for tag, run in summary["runs"].items():
        assert all(0 < record["teacher_gap"] <= 2 for record in run["sets"].values()), tag
        assert run["compactness"]["rows"] > 0 and run["compactness"]["gap"]["intra_mean"] is not None, tag
    assert all("teacher_gap" not in record for record in summary["teacher"].values())
    assert "| gap to teacher | train intra gap |" in (out / "sweep.md").read_text()


def test_each_variant_is_compared_with_the_baseline_of_its_seed(swept: tuple[Path, list[str], Path, dict]) -> None:
    out, _, _, summary = swept
    rows = summary["comparisons"]
    assert {(r["a"], r["b"]) for r in rows} == {("fcd/seed0", "no_kd/seed0"), ("fcd/seed1", "no_kd/seed1")}
    assert {r["set"] for r in rows} == {"heldout"}  # the .bin names no identities
    for r in rows:
        if r["metric"] == "auc":
            a, b = (summary["runs"][r[k]]["sets"]["heldout"]["auc"] for k in ("a", "b"))
            assert r["difference"] == pytest.approx(b - a)
    text = (out / "sweep.md").read_text()
    assert "Difference to the baseline `fcd`" in text and "| no_kd |" in text
    assert (out / "roc.png").exists() and (out / "sweep.toml").read_text() == SWEEP


def test_a_rerun_trains_nothing_again(swept: tuple[Path, list[str], Path, dict]) -> None:
    out, settings, sweep_file, summary = swept
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/seed*/checkpoints/*")}
    code, log, again = invoke("sweep", settings, str(sweep_file))
    assert code == 0, log
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/seed*/checkpoints/*")} == stamps
    assert again is not None
    assert again["comparisons"] == summary["comparisons"]


def test_a_rerun_trains_only_the_missing_run(swept: tuple[Path, list[str], Path, dict]) -> None:
    """As if the sweep had stopped before its last run: only that run is trained on the rerun."""
    out, settings, sweep_file, summary = swept
    shutil.rmtree(out / "no_kd" / "seed1")
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/seed*/checkpoints/*")}
    code, log, again = invoke("sweep", settings, str(sweep_file))
    assert code == 0, log
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/seed*/checkpoints/*") if p in stamps} == stamps
    assert latest_checkpoint(out / "no_kd" / "seed1" / "checkpoints") is not None
    assert again is not None and again["runs"]["no_kd/seed1"]["sets"] == summary["runs"]["no_kd/seed1"]["sets"]


def test_a_variant_with_an_unknown_key_names_the_file_and_variant(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[variants.v]\nset = ["loss.sdc_wieght=0.0"]\n', encoding="utf-8")
    spec = read_sweep(path)
    with pytest.raises(ConfigError, match=r"bad.toml', variants.v: unknown config key 'loss.sdc_wieght'"):
        variant_config(load_config(None), spec, spec.variants["v"], 0)


def test_an_unknown_key_in_a_later_variant_is_refused_before_anything_trains(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[variants.good]\nset = []\n[variants.bad]\nset = ["loss.sdc_wieght=0.0"]\n', encoding="utf-8")
    code, out, _ = invoke("sweep", [f"run.dir={tmp_path / 'out'}", "eval.pairs=[\"x.txt\"]"], str(path))
    assert code == 2 and "variants.bad: unknown config key 'loss.sdc_wieght'" in out
    assert not (tmp_path / "out" / "good").exists()
