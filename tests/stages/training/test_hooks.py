"""The training hooks: periodic verification, metrics, checkpoints, the NaN guard."""
from __future__ import annotations

from pathlib import Path

from tests.conftest import invoke, tiny_settings


def test_periodic_verification_during_training(pair_sets: tuple[Path, Path], tmp_path: Path,
                                               teacher_weights: Path) -> None:
    txt, _ = pair_sets
    code, out, _ = invoke("train", tiny_settings(tmp_path, teacher_weights)
                          + [f"eval.pairs=[\"{txt}\"]", "train.eval_every=2", "train.steps=4"])
    assert code == 0, out
    lines = (tmp_path / "verification.csv").read_text().splitlines()
    assert lines[0] == "step,heldout" and [ln.split(",")[0] for ln in lines[1:]] == ["2", "4"]
    assert all(0.0 <= float(ln.split(",")[1]) <= 1.0 for ln in lines[1:])
    code, out, _ = invoke("train", tiny_settings(tmp_path, teacher_weights)
                          + [f"eval.pairs=[\"{txt}\"]", "train.eval_every=2", "train.steps=2"], "--overwrite")
    assert code == 0, out
    lines = (tmp_path / "verification.csv").read_text().splitlines()
    assert [ln.split(",")[0] for ln in lines[1:]] == ["2"]  # a run started again does not keep the old rows
