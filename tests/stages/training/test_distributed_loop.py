"""`torchrun` for `train`/`distill` on the CPU (gloo): two processes run, checkpoint once, resume exactly on the
same world size and at all on another (with the LR schedule's new length), accumulate gradients, and only rank 0
prints the summary."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from checkpoints import load_checkpoint
from tests.conftest import invoke
from tests.helpers.torchrun import summaries, torchrun
from tests.stages.conftest import read_metrics


def resumable_copy(checkpoint: Path, run_dir: Path) -> Path:
    """A fresh `run_dir` holding only `checkpoint`, as an interrupted run leaves it."""
    (run_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(checkpoint, run_dir / "checkpoints")
    return run_dir


@pytest.fixture(scope="module")
def two_rank_run(extracted: tuple[Path, list[str], dict], tmp_path_factory: pytest.TempPathFactory
                 ) -> tuple[list[str], Path]:
    run, settings, _ = extracted
    base = settings + [f"cache.path={run / 'cache' / 'teacher.h5'}", "train.steps=6", "train.checkpoint_every=2"]
    full = tmp_path_factory.mktemp("ddp") / "full"
    done = torchrun("distill", base + [f"run.dir={full}"])
    assert done.returncode == 0, done.stderr[-3000:]
    return base, full


def test_two_processes_distill_and_rank_zero_alone_writes(two_rank_run: tuple[list[str], Path]) -> None:
    _, full = two_rank_run
    rows = read_metrics(full / "metrics.csv")
    assert [r["step"] for r in rows] == [str(s) for s in range(1, 7)]
    ckpts = sorted(p.name for p in (full / "checkpoints").iterdir())
    assert ckpts == ["checkpoint_00000004.pt", "checkpoint_00000006.pt"]
    state = load_checkpoint(full / "checkpoints" / "checkpoint_00000006.pt")
    assert state["world_size"] == 2 and state["step"] == 6
    assert not any(k.startswith("module.") for k in state["modules"]["student"])  # the inner module's weights
    assert (full / "backbone.pth").exists() and json.loads((full / "distill.json").read_text())["steps"] == 6


def test_two_process_resume_repeats_the_uninterrupted_losses(two_rank_run: tuple[list[str], Path],
                                                             tmp_path: Path) -> None:
    base, full = two_rank_run
    part = resumable_copy(full / "checkpoints" / "checkpoint_00000004.pt", tmp_path / "part")
    done = torchrun("distill", base + [f"run.dir={part}"], "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    found = summaries(done.stdout)
    assert len(found) == 1 and found[0]["steps"] == 6  # one summary: rank 0's
    want = {r["step"]: r for r in read_metrics(full / "metrics.csv")}
    got = read_metrics(part / "metrics.csv")
    assert [r["step"] for r in got] == ["5", "6"]
    for r in got:
        for key in ("loss", "margin", "fcd", "sdc"):
            assert float(r[key]) == pytest.approx(float(want[r["step"]][key]), abs=1e-6), (r["step"], key)


def test_a_two_process_checkpoint_resumes_in_one_process(two_rank_run: tuple[list[str], Path],
                                                         tmp_path: Path) -> None:
    base, full = two_rank_run
    part = resumable_copy(full / "checkpoints" / "checkpoint_00000004.pt", tmp_path / "one")
    code, out, summary = invoke("distill", base + [f"run.dir={part}"], "--resume")
    assert code == 0, out
    assert summary is not None and summary["steps"] == 6
    assert [r["step"] for r in read_metrics(part / "metrics.csv")] == ["5", "6"]


def test_two_processes_accumulate_gradients(two_rank_run: tuple[list[str], Path], tmp_path: Path) -> None:
    base, _ = two_rank_run
    done = torchrun("train", base + [f"run.dir={tmp_path / 'accum'}", "train.grad_accum=2", "train.steps=3"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert summaries(done.stdout)[0]["steps"] == 3
    assert [r["step"] for r in read_metrics(tmp_path / "accum" / "metrics.csv")] == ["1", "2", "3"]


def test_an_epochs_run_resumed_on_another_world_size_ends_its_schedule_at_its_last_step(
        two_rank_run: tuple[list[str], Path], tmp_path: Path) -> None:
    base, _ = two_rank_run
    epochs = base + ["train.steps=0", "train.epochs=2"]  # 3 plan batches an epoch: 3 steps on 2 ranks
    done = torchrun("distill", epochs + [f"run.dir={tmp_path / 'two'}"])
    assert done.returncode == 0, done.stderr[-3000:]
    part = resumable_copy(tmp_path / "two" / "checkpoints" / "checkpoint_00000002.pt", tmp_path / "one")
    code, out, summary = invoke("distill", epochs + [f"run.dir={part}"], "--resume")
    assert code == 0, out
    # step 2 on 2 ranks ended epoch 0 (its second step's spare rank wrapped): epoch 1's 3 batches take 3 steps on 1
    assert summary is not None and summary["steps"] == 5
    rows = read_metrics(part / "metrics.csv")
    assert [r["step"] for r in rows] == ["3", "4", "5"] and float(rows[-1]["lr"]) == pytest.approx(0.0, abs=1e-12)


def test_partial_fc_sharded_checkpoints_the_whole_matrix_and_resumes_on_one_or_two(
        two_rank_run: tuple[list[str], Path], tmp_path: Path) -> None:
    """`loss.sample_rate` under torchrun: each rank holds half the 8 classes, the checkpoint holds all 8 rows
    (and their momentum), a 2-process resume repeats the uninterrupted losses, a 1-process resume loads it."""
    base, _ = two_rank_run
    base = base + ["loss.method=fcd", "loss.sample_rate=0.5", "train.steps=4", "train.checkpoint_every=2"]
    full = tmp_path / "pfc"
    done = torchrun("distill", base + [f"run.dir={full}"])
    assert done.returncode == 0, done.stderr[-3000:]
    state = load_checkpoint(full / "checkpoints" / "checkpoint_00000004.pt")
    weight = state["modules"]["head"]["weight"]
    assert weight.shape[0] == 8 and state["world_size"] == 2
    momentum = [v["momentum_buffer"] for v in state["optimizer"]["state"].values()
                if v["momentum_buffer"].shape == weight.shape]
    assert len(momentum) == 1 and momentum[0].abs().sum(1).gt(0).all()
    part = resumable_copy(full / "checkpoints" / "checkpoint_00000002.pt", tmp_path / "part")
    done = torchrun("distill", base + [f"run.dir={part}"], "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    want = {r["step"]: r for r in read_metrics(full / "metrics.csv")}
    got = read_metrics(part / "metrics.csv")
    assert [r["step"] for r in got] == ["3", "4"]
    for r in got:
        for key in ("loss", "margin", "fcd"):
            assert float(r[key]) == pytest.approx(float(want[r["step"]][key]), abs=1e-6), (r["step"], key)
    one = resumable_copy(full / "checkpoints" / "checkpoint_00000002.pt", tmp_path / "one")
    code, out, summary = invoke("distill", base + [f"run.dir={one}"], "--resume")
    assert code == 0 and summary is not None and summary["steps"] == 4, out
    # and a 1-process checkpoint goes on in 2 processes, each taking its rows, gathered whole again at the end
    two = resumable_copy(one / "checkpoints" / "checkpoint_00000004.pt", tmp_path / "two")
    done = torchrun("distill", base + [f"run.dir={two}", "train.steps=6"], "--resume")  # the last step has lr 0
    assert done.returncode == 0, done.stderr[-3000:]
    last = load_checkpoint(two / "checkpoints" / "checkpoint_00000006.pt")
    assert last["world_size"] == 2 and last["modules"]["head"]["weight"].shape[0] == 8
    moved = (last["modules"]["head"]["weight"] - load_checkpoint(one / "checkpoints" / "checkpoint_00000004.pt")[
        "modules"]["head"]["weight"]).abs().sum(1)
    assert moved.gt(0).all()  # every row decayed or stepped from the rows it was given (none zeroed or swapped)
