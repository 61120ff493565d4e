"""`stages.distill`: `loss.method = "auto"` resolved from the cache, and the warning for a margin head on few images."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from tests.conftest import invoke, tiny_settings
from tests.stages.conftest import read_metrics


def _config(run: Path) -> dict:
    return tomllib.loads((run / "config.toml").read_text())


def test_auto_picks_adadistill_with_many_images_per_identity(extracted: tuple[Path, list[str], dict],
                                                             tmp_path: Path) -> None:
    run, settings, _ = extracted  # 8 identities x 6 images
    settings = settings + [f"run.dir={tmp_path}", f"cache.path={run}/cache/teacher.h5", "loss.method=auto"]
    code, out, _ = invoke("distill", settings + ["train.steps=2"])
    assert code == 0, out
    assert ("loss.method = auto: the training identities have a median of 6 images and the teacher's mean "
            "same-identity cosine on them is 0.62, so loss.method = 'adadistill'") in out
    assert _config(tmp_path)["loss"]["method"] == "adadistill"
    assert "adadistill" in read_metrics(tmp_path / "metrics.csv")[0]
    assert "loss.method = auto" in (tmp_path / "distill.log").read_text()
    # resolved the same way again: the checkpoint is the same experiment
    code, out, _ = invoke("distill", settings + ["train.steps=3"], "--resume")
    assert code == 0, out


def test_auto_picks_the_regression_recipe_with_few_images(tmp_path: Path, teacher_weights: Path) -> None:
    settings = tiny_settings(tmp_path, teacher_weights) + ["data.synthetic.images_per_identity=2",
                                                           "train.images_per_identity=2", "loss.method=auto"]
    assert invoke("extract", settings)[0] == 0
    code, out, _ = invoke("distill", settings + ["train.steps=2", "train.random_share=1.0", "icd.pairs=bank"])
    assert code == 0, out
    loss = _config(tmp_path)["loss"]
    assert (loss["method"], loss["margin_weight"], loss["fcd_weight"]) == ("rkd", 0.0, 10.0)
    assert "margin" not in read_metrics(tmp_path / "metrics.csv")[0]


def test_a_margin_head_on_few_images_is_warned_about(tmp_path: Path, teacher_weights: Path) -> None:
    settings = tiny_settings(tmp_path, teacher_weights) + ["data.synthetic.images_per_identity=2",
                                                           "train.images_per_identity=2"]
    assert invoke("extract", settings)[0] == 0
    code, out, _ = invoke("distill", settings + ["train.steps=1", "loss.method=fcd"])
    assert code == 0, out
    assert "loss.margin_weight = 1 trains a margin head over 8 identities with a median of 2 images" in out
    assert "loss.margin_weight=0 loss.fcd_weight=10" in out
    code, out, _ = invoke("distill", settings + [f"run.dir={tmp_path / 'ada'}", "train.steps=1",
                                                 f"cache.path={tmp_path}/cache/teacher.h5", "loss.method=adadistill"])
    assert code == 0 and "teacher class centres" in out and "loss.method=auto" in out


def test_distill_closes_with_the_training_gap_to_its_teacher(extracted: tuple[Path, list[str], dict],
                                                             tmp_path: Path) -> None:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from cache import TeacherCache
    from config import load_config
    from evaluation.compactness import intra_class_similarities, sample_rows
    from models import build_student
    from models.loading import load_backbone_weights
    from models.preprocess import student_input
    from readers import build_dataset

    run, settings, _ = extracted
    settings = settings + [f"run.dir={tmp_path}", f"cache.path={run}/cache/teacher.h5", "train.steps=2"]
    code, out, summary = invoke("distill", settings)
    assert code == 0 and summary is not None, out
    report = summary["train_compactness"]
    cfg = load_config(None, settings)
    with TeacherCache(run / "cache" / "teacher.h5", in_ram="never") as cache:
        rows = sample_rows(cache.labels, cache.done, 2000, cfg.run.seed)
        labels = cache.labels[rows]
        teacher = cache.targets(rows, np.zeros_like(rows))
    student = build_student(cfg.student, cfg.data.image_size)
    load_backbone_weights(student, tmp_path / "backbone.pth")
    images = torch.from_numpy(np.stack([build_dataset(cfg.data).load(int(r)) for r in rows]))
    with torch.no_grad():
        s_emb = F.normalize(student.eval()(student_input(images)), dim=-1).numpy()
    t_mean = float(intra_class_similarities(teacher, labels).mean())
    s_mean = float(intra_class_similarities(s_emb, labels).mean())
    assert report["teacher_intra_mean"] == pytest.approx(t_mean, abs=1e-5)
    assert report["student_intra_mean"] == pytest.approx(s_mean, abs=1e-4)
    assert report["intra_gap"] == pytest.approx(t_mean - s_mean, abs=1e-4)  # teacher minus student
    assert "same-identity cosine on 48 training images" in out and "premise" in out


def test_partial_fc_distills_resumes_and_refuses_where_there_is_no_head(extracted: tuple[Path, list[str], dict],
                                                                         tmp_path: Path) -> None:
    """`loss.sample_rate` < 1 trains through `distill` (margin head on), resumes, and stays in the saved config;
    with a method that has no learnable head it is exit 2 naming the key."""
    import torch

    run, settings, _ = extracted  # 8 identities
    settings = settings + [f"run.dir={tmp_path}", f"cache.path={run}/cache/teacher.h5", "loss.method=fcd",
                           "loss.sample_rate=0.5"]
    code, out, _ = invoke("distill", settings + ["train.steps=2", "train.checkpoint_every=1"])
    assert code == 0, out
    assert _config(tmp_path)["loss"]["sample_rate"] == 0.5
    assert all(float(r["margin"]) > 0 for r in read_metrics(tmp_path / "metrics.csv"))
    code, out, _ = invoke("distill", settings + ["train.steps=3"], "--resume")
    assert code == 0, out
    state = torch.load(sorted((tmp_path / "checkpoints").glob("*.pt"))[-1], weights_only=False)
    assert state["step"] == 3 and state["modules"]["head"]["weight"].shape[0] == 8
    code, out, _ = invoke("distill", settings + [f"run.dir={tmp_path / 'ada'}", "loss.method=adadistill",
                                                 "train.steps=1"])
    assert code == 2 and "loss.sample_rate" in out and "Traceback" not in out


def test_teacher_intra_is_the_mean_same_identity_cosine_of_the_cache(extracted: tuple[Path, list[str], dict]) -> None:
    """Against brute force over every same-identity pair of the cached view-0 targets; capped samples stay inside."""
    import numpy as np

    from cache import TeacherCache
    from stages.distill import teacher_intra

    run, _, _ = extracted
    with TeacherCache(run / "cache" / "teacher.h5", in_ram="never") as cache:
        rows = np.flatnonzero(cache.done)
        emb = cache.targets(rows, np.zeros_like(rows))
        labels = cache.labels[rows]
        same = [float(emb[i] @ emb[j]) for i in range(len(rows)) for j in range(i + 1, len(rows))
                if labels[i] == labels[j]]
        assert abs(teacher_intra(cache, rows, per_identity=100, identities=100) - np.mean(same)) < 1e-5
        capped = teacher_intra(cache, rows, per_identity=2, identities=3)
        assert min(same) - 1e-6 <= capped <= max(same) + 1e-6
        assert np.isnan(teacher_intra(cache, rows[np.unique(labels, return_index=True)[1]]))


def test_auto_with_many_images_but_a_loose_teacher_picks_the_regression_recipe() -> None:
    import numpy as np

    from config import PipelineConfig
    from stages.distill import resolve_method

    labels = np.repeat(np.arange(30), 17)
    cfg = resolve_method(PipelineConfig(), labels, lambda: 0.37)
    assert (cfg.loss.method, cfg.loss.margin_weight, cfg.loss.fcd_weight) == ("rkd", 0.0, 10.0)
    assert resolve_method(PipelineConfig(), labels, lambda: 0.83).loss.method == "adadistill"
