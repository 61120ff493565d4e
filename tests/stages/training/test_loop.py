"""`train` and `distill` end to end through click's CliRunner: losses, resume, refusals, NaN guard."""
from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from checkpoints import load_checkpoint, nonfinite_entries
from tests.conftest import invoke, tiny_settings
from tests.stages.conftest import read_metrics


def test_train_and_distill_reduce_the_loss(extracted: tuple[Path, list[str], dict], tmp_path: Path) -> None:
    run, settings, _ = extracted
    for command in ("train", "distill"):
        out_dir = tmp_path / command
        s = settings + [f"run.dir={out_dir}", f"cache.path={run / 'cache' / 'teacher.h5'}", "train.steps=12",
                        "train.checkpoint_every=100"]
        code, out, summary = invoke(command, s)
        assert code == 0, out
        rows = read_metrics(out_dir / "metrics.csv")
        assert len(rows) == 12
        losses = np.array([float(r["loss"]) for r in rows])
        assert losses[-3:].mean() < losses[:3].mean(), losses
        assert Path(summary["backbone"]).exists() and Path(summary["checkpoint"]).exists()
        assert summary["steps"] == 12
        if command == "distill":
            assert {"fcd", "sdc"} <= set(rows[0])
            fcd = np.array([float(r["fcd"]) for r in rows])
            assert fcd[-3:].mean() < fcd[:3].mean(), fcd


@pytest.mark.parametrize("command, method, terms", [
    ("train", "icd", ("margin",)), ("distill", "icd", ("margin", "fcd", "sdc")),
    ("distill", "adadistill", ("adadistill",)),  # teacher centres that move every step: checkpointed
    ("distill", "ekd", ("margin", "fcd", "ekd")),  # running thresholds: checkpointed
])
def test_resume_repeats_uninterrupted_losses(extracted: tuple[Path, list[str], dict], tmp_path: Path,
                                             command: str, method: str, terms: tuple[str, ...]) -> None:
    run, settings, _ = extracted
    base = settings + [f"cache.path={run / 'cache' / 'teacher.h5'}", "train.steps=6", "train.checkpoint_every=2",
                       f'loss.method="{method}"']
    full = tmp_path / "full"
    code, out, _ = invoke(command, base + [f"run.dir={full}"])
    assert code == 0, out
    ckpt = full / "checkpoints" / "checkpoint_00000004.pt"
    assert ckpt.exists()
    part = tmp_path / "part"
    (part / "checkpoints").mkdir(parents=True)
    shutil.copy(ckpt, part / "checkpoints" / ckpt.name)
    code, out, summary = invoke(command, base + [f"run.dir={part}"], "--resume")
    assert code == 0, out
    assert summary["steps"] == 6
    want = {r["step"]: r for r in read_metrics(full / "metrics.csv")}
    got = read_metrics(part / "metrics.csv")
    assert [r["step"] for r in got] == ["5", "6"]
    for r in got:
        for key in ("loss", *terms):
            assert float(r[key]) == pytest.approx(float(want[r["step"]][key]), abs=1e-6), (r["step"], key)


def test_resume_refuses_changed_experiment(extracted: tuple[Path, list[str], dict], tmp_path: Path) -> None:
    _run, settings, _ = extracted
    code, out, _ = invoke("train", settings + [f"run.dir={tmp_path}", "train.steps=2"])
    assert code == 0, out
    code, out, _ = invoke("train", settings + [f"run.dir={tmp_path}", "loss.margin=0.3"], "--resume")
    assert code == 2 and "[loss]" in out
    code, out, _ = invoke("train", settings + [f"run.dir={tmp_path / 'none'}"], "--resume")
    assert code == 2 and "no checkpoint" in out


def test_distill_refuses_mismatched_cache(extracted: tuple[Path, list[str], dict], tmp_path: Path) -> None:
    run, settings, _ = extracted
    base = settings + [f"run.dir={tmp_path}", f"cache.path={run / 'cache' / 'teacher.h5'}", "train.steps=1"]
    for change, needle in [("data.synthetic.seed=99", "seed=99"),
                           ("data.synthetic.identities=9", "listing_sha256"),
                           ("teacher.mean=[0.4, 0.5, 0.5]", "mean"),
                           ("teacher.embedding_size=64", "embedding_dim")]:
        code, out, _ = invoke("distill", base + [change])
        assert code == 2 and needle in out, (change, out)
    code, out, _ = invoke("distill", base + [f"cache.path={tmp_path / 'nope.h5'}"])
    assert code == 2 and "nope.h5" in out


def test_distill_never_builds_the_teacher(extracted: tuple[Path, list[str], dict], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import models
    import models.embedder as embedder

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the teacher was built during distill")

    monkeypatch.setattr(models, "build_teacher", forbidden)
    for cls in (embedder.TorchEmbedder, embedder.OnnxEmbedder, embedder.TorchScriptEmbedder):
        monkeypatch.setattr(cls, "__init__", forbidden)
    run, settings, _ = extracted
    code, out, _ = invoke("distill", settings + [f"run.dir={tmp_path}", f"cache.path={run / 'cache' / 'teacher.h5'}",
                                                 "train.steps=2"])
    assert code == 0, out


def test_non_finite_loss_names_step_and_term(extracted: tuple[Path, list[str], dict], tmp_path: Path) -> None:
    run, settings, _ = extracted
    code, out, _ = invoke("distill", settings + [f"run.dir={tmp_path}", f"cache.path={run / 'cache' / 'teacher.h5'}",
                                                 "loss.scale=1e38"])
    assert code == 1
    assert "non-finite loss at step 1" in out and "margin" in out


def test_a_good_checkpoint_is_finite(extracted: tuple[Path, list[str], dict], tmp_path: Path) -> None:
    """A huge learning rate blows the weights up: the run stops, and the checkpoint it names is finite."""
    _run, settings, _ = extracted
    code, out, _ = invoke("train", settings + [f"run.dir={tmp_path}", "train.lr=1e8", "train.checkpoint_every=1",
                                               "train.steps=8", "train.grad_clip=0"])
    assert code == 1 and "non-finite" in out, out
    named = re.search(r"last good checkpoint: (\S+)", out)
    assert named is not None, out
    for path in sorted((tmp_path / "checkpoints").glob("checkpoint_*.pt")):
        assert nonfinite_entries(load_checkpoint(path)) == [], path
    assert not (tmp_path / "backbone.pth").exists()


def test_a_used_run_dir_is_resumed_or_refused_never_half_reused(extracted: tuple[Path, list[str], dict],
                                                                tmp_path: Path) -> None:
    _run, settings, _ = extracted
    s = settings + [f"run.dir={tmp_path}", "train.steps=4"]
    assert invoke("train", s)[0] == 0
    code, out, _ = invoke("train", s)
    assert code == 2 and "--resume" in out and "--overwrite" in out, out
    assert len(read_metrics(tmp_path / "metrics.csv")) == 4  # nothing was touched
    code, out, summary = invoke("train", s + ["train.steps=2"], "--overwrite")
    assert code == 0, out
    assert [int(r["step"]) for r in read_metrics(tmp_path / "metrics.csv")] == [1, 2]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["checkpoint_00000002.pt"]


def test_resume_falls_back_from_a_corrupt_latest_checkpoint_and_drops_a_torn_row(
        extracted: tuple[Path, list[str], dict], tmp_path: Path) -> None:
    _run, settings, _ = extracted
    s = settings + [f"run.dir={tmp_path}", "train.steps=6", "train.checkpoint_every=2"]
    code, out, _ = invoke("train", s)  # keeps checkpoints 4 and 6 (final)
    assert code == 0, out
    expected = read_metrics(tmp_path / "metrics.csv")
    ckpts = tmp_path / "checkpoints"
    (ckpts / "checkpoint_00000006.pt").unlink()  # as if killed before the final save
    (ckpts / "checkpoint_00000005.pt").write_bytes(b"not a checkpoint")  # a damaged newer file
    lines = (tmp_path / "metrics.csv").read_text().splitlines(keepends=True)
    (tmp_path / "metrics.csv").write_text("".join(lines[:5]) + "1")  # rows 1-4, then the torn start of a row
    code, out, resumed = invoke("train", s, "--resume")
    assert code == 0, out
    assert "checkpoint_00000005.pt" in out and "resuming from the one before, checkpoint_00000004.pt" in out
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 7))
    assert [r["loss"] for r in rows] == [r["loss"] for r in expected]


def test_sdc_without_any_positive_pair_is_announced(tmp_path: Path, teacher_weights: Path) -> None:
    settings = tiny_settings(tmp_path, teacher_weights) + ["data.synthetic.images_per_identity=1",
                                                           "data.synthetic.identities=12", "train.steps=2"]
    assert invoke("extract", settings)[0] == 0
    code, out, summary = invoke("distill", settings)
    assert code == 0, out
    assert "no identity has two usable images" in out and out.count("no identity has two") == 1


def test_resuming_a_finished_run_leaves_its_files_alone(extracted: tuple[Path, list[str], dict],
                                                        tmp_path: Path) -> None:
    import hashlib

    _run, settings, _ = extracted
    s = settings + [f"run.dir={tmp_path}", "train.steps=2"]
    code, out, first = invoke("train", s)
    assert code == 0, out
    digest = hashlib.sha256(Path(first["backbone"]).read_bytes()).hexdigest()
    code, out, again = invoke("train", s, "--resume")
    assert code == 0, out
    assert again["steps"] == 2 and again["checkpoint"] == first["checkpoint"]
    assert again["images_per_s"] > 0
    assert hashlib.sha256(Path(again["backbone"]).read_bytes()).hexdigest() == digest


def test_bank_pairs_train_on_random_batches(extracted: tuple[Path, list[str], dict], tmp_path: Path) -> None:
    """ICD-Face's likely setting: random batches (`train.random_share = 1.0`), positives from the bank only."""
    run, settings, _ = extracted
    s = settings + [f"run.dir={tmp_path}", f"cache.path={run / 'cache' / 'teacher.h5'}", "train.steps=4",
                    "train.random_share=1.0", 'icd.pairs="bank"', "train.checkpoint_every=100"]
    code, out, summary = invoke("distill", s)
    assert code == 0, out
    assert summary["steps"] == 4 and summary["epochs"] == pytest.approx(4 / 3, abs=1e-3)  # 48 rows, batches of 16
    sdc = [float(r["sdc"]) for r in read_metrics(tmp_path / "metrics.csv")]
    assert sdc[0] == 0.0 and min(sdc[1:]) > 0.0  # the bank is empty at the first step only
    code, out, _ = invoke("train", settings + [f"run.dir={tmp_path / 'train'}", "train.steps=1",
                                               "train.random_share=1.0"])
    assert code == 0, out  # `train` has no SDC term, so icd.pairs does not matter


@pytest.mark.parametrize("changes, keys", [
    (['icd.pairs="both"', "train.random_share=1.0"], ("'icd.pairs' = 'both'", "'train.random_share' = 1.0")),
    (['icd.pairs="batch"', "train.random_share=1.0"], ("'icd.pairs' = 'batch'", "'train.random_share' = 1.0")),
    (['icd.pairs="bank"', "icd.max_age=0"], ("'icd.pairs' = 'bank'", "'icd.max_age' = 0")),
    (['icd.pairs="both"', "icd.max_age=0", "train.random_share=0.0"], ("'icd.pairs' = 'both'", "'icd.max_age' = 0")),
    (['icd.pairs="bank"', "train.random_share=1.0", "train.identities_per_batch=2"],
     ("'train.identities_per_batch' = 2", "'train.random_share' = 1.0")),
])
def test_pair_sources_that_cannot_work_are_refused_naming_the_keys(
        extracted: tuple[Path, list[str], dict], tmp_path: Path, changes: list[str], keys: tuple[str, ...]) -> None:
    run, settings, _ = extracted
    code, out, _ = invoke("distill", settings + [f"run.dir={tmp_path}", f"cache.path={run / 'cache' / 'teacher.h5'}",
                                                 "train.steps=1", *changes])
    assert code == 2, out
    assert all(k in out for k in keys), out
    assert not (tmp_path / "metrics.csv").exists()


def test_farthest_positive_policy_runs(extracted: tuple[Path, list[str], dict], tmp_path: Path,
                                       caplog: pytest.LogCaptureFixture) -> None:
    run, settings, _ = extracted
    cache = f"cache.path={run / 'cache' / 'teacher.h5'}"
    with caplog.at_level(logging.INFO, logger="stages.training.policy"):
        code, out, summary = invoke("distill", settings + [f"run.dir={tmp_path}", cache, "train.steps=1",
                                                           'train.positive_policy="farthest"',
                                                           "train.random_share=0.0"])  # groups: P x M batches
    assert code == 0 and summary["steps"] == 1, out
    assert "48 rows' farthest positives" in caplog.text  # distill built the sampler's table from the policy


def test_margin_weight_zero_distills_without_the_head(extracted: tuple[Path, list[str], dict],
                                                      tmp_path: Path) -> None:
    """`loss.margin_weight = 0`: pure regression on the cached targets; `train` then has nothing to learn from."""
    run, settings, _ = extracted
    s = settings + [f"cache.path={run / 'cache' / 'teacher.h5'}", "train.steps=6", "train.checkpoint_every=100",
                    "loss.margin_weight=0.0", "loss.sdc_weight=0.0"]
    code, out, summary = invoke("distill", s + [f"run.dir={tmp_path / 'distill'}"])
    assert code == 0, out
    rows = read_metrics(tmp_path / "distill" / "metrics.csv")
    assert "margin" not in rows[0]
    fcd = [float(r["fcd"]) for r in rows]
    assert all(float(r["loss"]) == pytest.approx(f, rel=1e-6) for r, f in zip(rows, fcd, strict=True))
    assert fcd[-1] < fcd[0]
    code, out, early = invoke("distill", s + [f"run.dir={tmp_path / 'early'}", "train.steps=1"])
    assert code == 0, out
    heads = [load_checkpoint(Path(x["checkpoint"]))["modules"]["head"] for x in (early, summary)]
    assert all(np.array_equal(heads[0][k].numpy(), heads[1][k].numpy()) for k in heads[0])  # never stepped
    code, out, _ = invoke("train", settings + [f"run.dir={tmp_path / 'train'}", "train.steps=1",
                                               "loss.margin_weight=0.0"])
    assert code == 2 and "'loss.margin_weight'" in out, out
    assert not (tmp_path / "train" / "metrics.csv").exists()


def test_gradient_accumulation_counts_optimiser_steps_and_resumes_exactly(
        extracted: tuple[Path, list[str], dict], tmp_path: Path) -> None:
    run, settings, _ = extracted
    base = settings + [f"cache.path={run / 'cache' / 'teacher.h5'}", "train.steps=4", "train.checkpoint_every=2",
                       "train.grad_accum=2"]
    full = tmp_path / "full"
    code, out, summary = invoke("distill", base + [f"run.dir={full}"])
    assert code == 0, out
    assert summary is not None and summary["steps"] == 4
    state = load_checkpoint(full / "checkpoints" / "checkpoint_00000002.pt")
    plan = 3  # 48 rows in batches of 16: four batches trained by step 2 are one epoch and one batch
    assert (state["epoch"], state["position"]) == (4 // plan, 4 % plan)
    single = tmp_path / "single"
    assert invoke("distill", settings + [f"cache.path={run / 'cache' / 'teacher.h5'}", "train.steps=4",
                                         f"run.dir={single}"])[0] == 0
    want = read_metrics(full / "metrics.csv")
    assert [r["step"] for r in want] == ["1", "2", "3", "4"]
    assert float(want[1]["loss"]) != pytest.approx(float(read_metrics(single / "metrics.csv")[1]["loss"]), abs=1e-6)
    part = tmp_path / "part"
    (part / "checkpoints").mkdir(parents=True)
    shutil.copy(full / "checkpoints" / "checkpoint_00000002.pt", part / "checkpoints")
    code, out, _ = invoke("distill", base + [f"run.dir={part}"], "--resume")
    assert code == 0, out
    for r, w in zip(read_metrics(part / "metrics.csv"), want[2:], strict=True):
        assert r["step"] == w["step"] and float(r["loss"]) == pytest.approx(float(w["loss"]), abs=1e-6)


def test_resume_falls_back_from_a_checkpoint_whose_weights_do_not_fit(
        extracted: tuple[Path, list[str], dict], tmp_path: Path) -> None:
    import torch

    _run, settings, _ = extracted
    s = settings + [f"run.dir={tmp_path}", "train.steps=6", "train.checkpoint_every=2"]
    code, out, _ = invoke("train", s)
    assert code == 0, out
    ckpts = tmp_path / "checkpoints"
    (ckpts / "checkpoint_00000006.pt").unlink()
    state = torch.load(ckpts / "checkpoint_00000004.pt", weights_only=True)
    state["modules"]["student"].pop(next(iter(state["modules"]["student"])))  # a deleted weight
    torch.save(state, ckpts / "checkpoint_00000005.pt")
    code, out, _ = invoke("train", s, "--resume")
    assert code == 0 and "Traceback" not in out, out
    assert "checkpoint_00000005.pt (modules.student)' does not fit the model: 1 missing keys" in out
    assert "resuming from the one before, checkpoint_00000004.pt" in out


def test_sdc_starts_after_its_warm_up(extracted: tuple[Path, list[str], dict], tmp_path: Path) -> None:
    run, settings, _ = extracted
    # 48 rows in P x M batches of 16: an epoch is 3 to 4 steps, so a warm-up of 1 epoch keeps SDC at 0 that long
    s = settings + [f"run.dir={tmp_path}", f"cache.path={run / 'cache' / 'teacher.h5'}", "train.steps=6",
                    "train.checkpoint_every=100", 'loss.method="icd"', "icd.warmup_epochs=1.0",
                    'icd.pairs="batch"', "train.random_share=0.0"]
    code, out, _ = invoke("distill", s)
    assert code == 0, out
    sdc = [float(r["sdc"]) for r in read_metrics(tmp_path / "metrics.csv")]
    warm = next(k for k, v in enumerate(sdc) if v != 0.0)  # steps before SDC starts (identity pairs in every batch)
    assert 3 <= warm < 6 and all(v > 0 for v in sdc[warm:]), sdc
