"""TensorBoard scalars of `distill`: every loss term, lr, images/s, compactness and verification; resume purges."""
from __future__ import annotations

from pathlib import Path

import pytest

from stages.training.tensorboard import open_writer, scalar_tag
from tests.conftest import invoke, tiny_settings


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tags_of_the_metrics_columns() -> None:
    assert [scalar_tag(n) for n in ("loss", "fcd", "sdc", "lr", "images_per_s", "intra_student")] == [
        "loss/total", "loss/fcd", "loss/sdc", "train/lr", "train/images_per_s", "compactness/intra_student"]


def test_distill_writes_every_scalar(tmp_path: Path, teacher_weights: Path, pair_sets: tuple[Path, Path]) -> None:
    pytest.importorskip("tensorboard")
    settings = tiny_settings(tmp_path, teacher_weights) + [
        "train.tensorboard=always", "train.log_every=2", "train.eval_every=3", f"eval.pairs={[str(pair_sets[0])]}",
        "train.random_share=0", "icd.pairs=both"]  # in-batch positive pairs: the compactness statistics exist
    assert invoke("extract", settings)[0] == 0
    code, out, _ = invoke("distill", settings)
    assert code == 0, out
    scalars = _scalars(tmp_path)
    for tag in ("loss/total", "loss/margin", "loss/fcd", "loss/sdc", "train/lr"):
        assert [s for s, _ in scalars[tag]] == list(range(1, 7)), tag
    assert [s for s, _ in scalars["train/images_per_s"]] == [1, 2, 4, 6]  # the first step is logged at once
    for stat in ("ts_cos", "intra_teacher", "intra_student"):
        assert len(scalars[f"compactness/{stat}"]) == 6
    assert [s for s, _ in scalars["verification/heldout"]] == [3, 6]
    assert all(0.0 <= v <= 1.0 for _, v in scalars["verification/heldout"])

    for ckpt in sorted((tmp_path / "checkpoints").glob("*"))[-1:]:
        ckpt.unlink()  # the final checkpoint goes: the run resumes from step 4
    code, out, _ = invoke("distill", settings, "--resume")
    assert code == 0, out
    resumed = _scalars(tmp_path)
    assert [s for s, _ in resumed["loss/total"]] == list(range(1, 7))  # steps 5 and 6 once, not twice
    assert [s for s, _ in resumed["verification/heldout"]] == [3, 6]


def test_never_writes_nothing_and_always_needs_the_package(tmp_path: Path, teacher_weights: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    assert open_writer(tmp_path, "never", None) is None
    import stages.training.tensorboard as tb

    monkeypatch.setattr(tb, "tensorboard_available", lambda: False)
    assert open_writer(tmp_path, "auto", None) is None
    settings = tiny_settings(tmp_path, teacher_weights) + ["train.tensorboard=always"]
    code, out, _ = invoke("train", settings + ["train.steps=2"])
    assert code == 2 and "train.tensorboard" in out and "pip install" in out
    assert not (tmp_path / "tensorboard").exists()
