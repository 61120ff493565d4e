"""`demo --quick` end to end: report, plots, summary, and three distinct student recipes."""
from __future__ import annotations

from pathlib import Path

import pytest

from checkpoints import latest_checkpoint, load_checkpoint
from config import load_config
from tests.conftest import invoke
from tests.stages.conftest import read_metrics


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    tmp_path = tmp_path_factory.mktemp("demo")
    code, out, summary = invoke("demo", [f"run.dir={tmp_path}", "run.device=cpu"], "--quick")
    assert code == 0, out
    return tmp_path, summary


def test_demo_quick_writes_report(demo_run: tuple[Path, dict]) -> None:
    tmp_path, summary = demo_run
    report = Path(summary["report"])
    assert report.exists() and (tmp_path / "demo.json").exists()
    text = report.read_text()
    for name in ("teacher", "no_kd", "fcd", "fcd_icd"):
        assert name in text
    assert (tmp_path / "roc.png").exists() and (tmp_path / "heldout_similarity.png").exists()
    assert summary["smoke_test"] is True and "Smoke test" in text and "mean nothing" in text
    assert "demo --quick is a smoke test" in (tmp_path / "demo.log").read_text()
    assert "| parameters | FLOPs per face |" in text
    for name, model in summary["models"].items():
        assert model["parameters"] > 0 and model["flops"] > 0, name
        ev, ev_all = model["eval"], model["eval_all"]
        assert 0.0 <= ev["accuracy_mean"] <= 1.0, name
        assert ev["pairs"] == 40
        # 8 held-out identities x 4 images: all 8 * 6 genuine pairs and all 32 * 28 / 2 - 48 impostor pairs
        assert (ev_all["genuine_pairs"], ev_all["impostor_pairs"]) == (48, 448)
        assert ev_all["tar_at_far"]["1e-2"] is not None and ev_all["tar_at_far"]["1e-3"] is None
        assert -1.0 <= ev_all["intra_mean"] <= 1.0 + 1e-6
        assert model["images_per_s"] > 0


def test_demo_states_student_differences_with_intervals(demo_run: tuple[Path, dict]) -> None:
    """Each contrast of each seed, on the all-vs-all set: b - a of the models' own records, inside its interval."""
    _, summary = demo_run
    rows = summary["comparisons"]
    assert {(r["a"], r["b"]) for r in rows} == {("seed0/no_kd", "seed0/fcd"), ("seed0/fcd", "seed0/fcd_icd"),
                                                 ("seed0/no_kd", "seed0/fcd_icd")}
    for row in rows:
        assert row["set"] == "heldout_all"
        if row["metric"] == "auc":
            a, b = (summary["models"][row[k]]["eval_all"]["auc"] for k in ("a", "b"))
            assert row["difference"] == pytest.approx(b - a)
            assert row["ci_low"] <= row["difference"] <= row["ci_high"]
    report = Path(summary["report"]).read_text()
    assert "Student vs student" in report and "95% interval" in report


def test_demo_students_ran_three_different_recipes(demo_run: tuple[Path, dict]) -> None:
    """no_kd is `train`; fcd's loss is margin + w_fcd * fcd (SDC weight 0); fcd_icd's adds its SDC term."""
    tmp_path, summary = demo_run
    report = Path(summary["report"]).read_text()
    assert "Demo preset" in report and "`data.image_size = 16`" in report
    runs = {name: tmp_path / "seed0" / name for name in ("no_kd", "fcd", "fcd_icd")}
    cfgs = {name: load_config(d / "config.toml") for name, d in runs.items()}
    commands = {name: load_checkpoint(latest_checkpoint(d / "checkpoints"))["command"] for name, d in runs.items()}
    assert commands == {"no_kd": "train", "fcd": "distill", "fcd_icd": "distill"}
    assert cfgs["fcd"].loss.sdc_weight == 0.0 < cfgs["fcd_icd"].loss.sdc_weight
    metrics = {name: read_metrics(d / "metrics.csv") for name, d in runs.items()}
    assert "fcd" not in metrics["no_kd"][0]
    w = cfgs["fcd"].loss.fcd_weight
    for row in metrics["fcd"]:
        assert float(row["loss"]) == pytest.approx(float(row["margin"]) + w * float(row["fcd"]), rel=1e-5)
    icd = metrics["fcd_icd"]
    assert any(float(r["sdc"]) > 0 for r in icd)
    assert any(float(r["loss"]) != pytest.approx(float(r["margin"]) + w * float(r["fcd"]), rel=1e-5) for r in icd)
    losses = {name: [r["loss"] for r in m] for name, m in metrics.items()}
    assert len({tuple(v) for v in losses.values()}) == 3


def test_the_preset_says_which_user_settings_it_replaces(caplog: pytest.LogCaptureFixture) -> None:
    from config import load_config
    from stages.demo.preset import demo_config

    cfg = load_config(None, ["loss.fcd_weight=2.0", "data.image_size=64"])
    with caplog.at_level("WARNING", logger="stages.demo.preset"):
        out = demo_config(cfg)
    assert out.loss.fcd_weight == cfg.demo.fcd_weight and out.data.image_size == cfg.demo.image_size
    assert "loss.fcd_weight = 2.0" in caplog.text and "data.image_size = 64" in caplog.text
    assert "demo.*" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="stages.demo.preset"):
        demo_config(load_config(None))
    assert caplog.text == ""
