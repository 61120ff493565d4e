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


def _fake_run(step: int, total: int = 10) -> object:
    from types import SimpleNamespace

    train = SimpleNamespace(log_every=5, checkpoint_every=8, eval_every=0)
    return SimpleNamespace(step=step, total=total, cfg=SimpleNamespace(train=train), last_checkpoint=None)


def test_nan_guard_reads_back_at_sync_steps_and_names_the_first_bad_step() -> None:
    import pytest
    import torch

    from common.errors import PipelineError
    from stages.training.hooks import NanGuard, sync_step
    from stages.training.step import StepOutput

    # the first step (its log line shows the run moving at once), every log / checkpoint step, the last
    assert [s for s in range(1, 11) if sync_step(_fake_run(s))] == [1, 5, 8, 10]  # type: ignore[arg-type]
    guard = NanGuard()
    good = StepOutput(torch.tensor(1.0), {"margin": torch.tensor(1.0), "fcd": torch.tensor(0.5)}, {}, 4)
    bad = StepOutput(torch.tensor(float("nan")), {"margin": torch.tensor(1.0), "fcd": torch.tensor(float("inf"))},
                     {}, 4)
    for step in range(1, 6):
        guard.after_step(_fake_run(step), good)  # type: ignore[arg-type]
    guard.after_step(_fake_run(6), bad)  # type: ignore[arg-type]
    guard.after_step(_fake_run(7), good)  # type: ignore[arg-type]  # no sync yet: nothing raised
    with pytest.raises(PipelineError, match=r"non-finite loss at step 6: term\(s\) fcd;"):
        guard.after_step(_fake_run(8), good)  # type: ignore[arg-type]
