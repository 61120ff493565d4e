"""`cli.py export`: a verified ONNX file with its preprocessing in the metadata, its model card, and the
exported student evaluated with no preprocessing flags giving the checkpoint's numbers."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from deploy.onnx_export import Verification
from models.onnx_metadata import PREFIX
from tests.conftest import invoke

WRONG_TEACHER_PREPROCESSING = ["teacher.color=BGR", "teacher.mean=[0.0, 0.0, 0.0]", "teacher.std=[1.0, 1.0, 1.0]",
                               "teacher.input_layout=NHWC"]


def _run_dir(settings: list[str]) -> Path:
    return Path(next(s for s in settings if s.startswith("run.dir=")).split("=", 1)[1])


def _sets(summary: dict) -> dict:
    return {name: (r["accuracy_mean"], r["auc"], r["tar_at_far"]) for name, r in summary["sets"].items()}


def test_export_writes_a_verified_onnx_and_its_model_card(trained: list[str]) -> None:
    (_run_dir(trained) / "evaluate.json").unlink(missing_ok=True)  # not evaluated (whatever ran before)
    code, out, summary = invoke("export", trained)
    assert code == 0, out
    assert summary is not None
    path = Path(summary["onnx"])
    assert path == _run_dir(trained) / "student.onnx"
    assert set(summary["min_cosine"]) == {"1", "7"} and min(summary["min_cosine"].values()) >= 0.9999
    model = onnx.load(str(path))
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta[PREFIX + "input_size"]) == 16 and json.loads(meta[PREFIX + "mean"]) == [0.5, 0.5, 0.5]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"] and isinstance(session.get_inputs()[0].shape[0], str)
    out_3 = session.run(None, {"input": np.zeros((3, 3, 16, 16), np.float32)})[0]
    assert out_3.shape == (3, 16)
    card = json.loads(Path(summary["model_card"]).read_text())
    assert card["arch"] == "mobilefacenet" and card["embedding_size"] == 16 and card["licence"] == ""
    assert card["input"]["shape"] == ["batch", 3, 16, 16] and card["input"]["color"] == "RGB"
    assert card["training"]["command"] == "distill" and len(card["training"]["config_hash"]) == 64
    assert card["teacher"]["arch"] == "iresnet18" and len(card["teacher"]["weights_sha256"]) == 64
    assert card["onnx"]["opset"] == 17 and card["onnx"]["sha256"] and card["onnx"]["verification"]["threshold"]
    assert card["parameters"] > 0 and card["flops"] > 0 and card["onnx_bytes"] == path.stat().st_size
    assert set(card["latency_ms"]) == {"1", "32"} and all(v > 0 for v in card["latency_ms"].values())
    markdown = Path(summary["model_card_md"]).read_text()
    assert "(pixel / 255 - mean) / std" in markdown and "Not evaluated" in markdown
    assert "## Size and speed" in markdown and f"{card['onnx_bytes']} bytes" in markdown


def test_the_exported_student_evaluates_like_its_checkpoint(trained: list[str], pair_sets: tuple[Path, Path],
                                                            tmp_path: Path) -> None:
    onnx_path = tmp_path / "student.onnx"
    assert invoke("export", trained + [f"export.output={onnx_path}"])[0] == 0
    pairs = [f"eval.pairs={[str(p) for p in pair_sets]}", "eval.n_boot=50"]
    # the [teacher] keys describe the teacher: the model's own metadata decides how it is fed
    code, out, summary = invoke("evaluate", trained + pairs + WRONG_TEACHER_PREPROCESSING +
                                [f"eval.model={['student', str(onnx_path)]}"])
    assert code == 0, out
    assert summary is not None and set(summary["models"]) == {"student", "student_onnx"}
    from_ckpt, from_onnx = _sets(summary["models"]["student"]), _sets(summary["models"]["student_onnx"])
    assert from_ckpt.keys() == from_onnx.keys() and len(from_ckpt) == 2
    for name, (acc, auc, tar) in from_ckpt.items():
        acc_onnx, auc_onnx, tar_onnx = from_onnx[name]
        assert acc_onnx == pytest.approx(acc, abs=1e-9) and auc_onnx == pytest.approx(auc, abs=1e-6)
        assert tar_onnx == pytest.approx(tar, abs=1e-6)
    assert summary["comparisons"]
    assert all(c["difference"] is None or abs(c["difference"]) < 1e-6 for c in summary["comparisons"])


def test_the_model_card_carries_the_runs_evaluation(trained: list[str], pair_sets: tuple[Path, Path],
                                                    tmp_path: Path) -> None:
    code, out, evaluated = invoke("evaluate", trained + [f"eval.pairs={[str(pair_sets[0])]}", "eval.model=student"])
    assert code == 0, out
    code, out, summary = invoke("export", trained + [f"export.output={tmp_path / 'carded.onnx'}"])
    assert code == 0 and summary is not None, out
    card = json.loads(Path(summary["model_card"]).read_text())
    assert evaluated is not None
    name = next(iter(evaluated["sets"]))
    assert card["evaluation"]["sets"][name]["auc"] == evaluated["sets"][name]["auc"]
    assert f"| {name} |" in Path(summary["model_card_md"]).read_text()


def test_float16_export_and_a_plain_backbone(trained: list[str], pair_sets: tuple[Path, Path], tmp_path: Path) -> None:
    backbone = _run_dir(trained) / "backbone.pth"
    half = tmp_path / "half.onnx"
    code, out, summary = invoke("export", trained + [f"export.model={backbone}", f"export.output={half}",
                                                     "export.dtype=float16"])
    assert code == 0 and summary is not None, out
    assert min(summary["min_cosine"].values()) >= 0.999
    session = ort.InferenceSession(str(half), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(float16)"
    card = json.loads(Path(summary["model_card"]).read_text())
    assert card["training"]["backbone"] == str(backbone) and card["teacher"] == {}
    code, out, _ = invoke("evaluate", trained + [f"eval.pairs={[str(pair_sets[0])]}", f"eval.model={half}"])
    assert code == 0, out


def test_export_usage_errors(trained: list[str], tmp_path: Path) -> None:
    code, out, _ = invoke("export", trained + [f"export.output={tmp_path / 'x.pt'}"])
    assert code == 2 and "export.output" in out
    code, out, _ = invoke("export", trained + [f"export.model={tmp_path / 'missing.pt'}"])
    assert code == 2 and "export.model" in out
    code, out, _ = invoke("export", trained + ["export.dtype=int8"])
    assert code == 2 and "export.dtype" in out
    code, out, _ = invoke("export", trained + ["export.opset=30"])
    assert code == 2 and "export.opset" in out
    code, out, _ = invoke("export", [f"run.dir={tmp_path / 'empty'}"])
    assert code == 2 and "no checkpoint" in out


def test_a_model_failing_export_or_verification_is_not_written(trained: list[str], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import stages.export

    monkeypatch.setattr(stages.export, "verify_onnx", lambda *a, **k: Verification({1: 0.5, 7: 0.5}, 0.9999))
    target = tmp_path / "bad.onnx"
    code, out, _ = invoke("export", trained + [f"export.output={target}"])
    assert code == 1 and "failed verification" in out
    assert list(tmp_path.iterdir()) == []

    def exporter_fails(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Unsupported: ONNX export of operator foo")

    monkeypatch.setattr(stages.export, "export_onnx", exporter_fails)
    code, out, _ = invoke("export", trained + [f"export.output={target}"])
    assert code == 1 and "torch.onnx.export of mobilefacenet" in out and "operator foo" in out
    assert "Traceback" not in out and list(tmp_path.iterdir()) == []

    def runtime_refuses(*args: object, **kwargs: object) -> Verification:
        raise RuntimeError("NOT_IMPLEMENTED: Could not find an implementation for Foo(1)")

    monkeypatch.undo()
    monkeypatch.setattr(stages.export, "verify_onnx", runtime_refuses)
    code, out, _ = invoke("export", trained + [f"export.output={target}"])
    assert code == 1 and "onnxruntime could not run the export of mobilefacenet" in out and "Foo(1)" in out
    assert "Traceback" not in out and list(tmp_path.iterdir()) == []


def test_the_readmes_onnxruntime_snippet_gives_the_toolkits_embedding(trained: list[str], tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    from PIL import Image

    from models.embedder import OnnxEmbedder
    from readers import SyntheticDataset
    from tests.conftest import REPO

    onnx_path = tmp_path / "student.onnx"
    assert invoke("export", trained + [f"export.output={onnx_path}"])[0] == 0
    faces = SyntheticDataset(2, 1, 16, seed=11, difficulty=1.0)
    images = np.stack([faces.load(0), faces.load(1)])
    for name, image in zip(("a.jpg", "b.jpg"), images, strict=True):
        Image.fromarray(image).save(tmp_path / name, format="PNG")  # lossless, whatever the suffix says
    code = re.search(r"The onnxruntime code a user copies.*?```python\n(.*?)```",
                     (REPO / "docs" / "deploy.md").read_text(), re.S)
    assert code is not None
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(code.group(1), scope)  # noqa: S102 - the docs' own snippet
    fused = OnnxEmbedder(onnx_path).embed_fused(images, 2)
    np.testing.assert_allclose(scope["embed"]("a.jpg"), fused[0], atol=1e-5)
    assert scope["similarity"] == pytest.approx(float(fused[0] @ fused[1]), abs=1e-5)


def test_verification_faces_come_from_the_data_when_it_is_readable(tmp_path: Path) -> None:
    from config import load_config
    from readers import SyntheticDataset, write_rec_dataset
    from stages.export import verification_faces

    faces = SyntheticDataset(4, 5, 32, seed=2, difficulty=1.0)
    write_rec_dataset(((faces.load(i), int(faces.labels[i])) for i in range(20)), tmp_path / "train.rec",
                      tmp_path / "train.idx")
    cfg = load_config(None, ["data.format=rec", f"data.root={tmp_path}"])
    images, source = verification_faces(cfg, 16)
    assert images.shape == (7, 16, 16, 3) and source == f"7 images of '{tmp_path}'"
    missing = load_config(None, ["data.format=rec", f"data.root={tmp_path / 'gone'}"])
    images, source = verification_faces(missing, 16)
    assert images.shape == (7, 16, 16, 3) and source == "7 synthetic faces"


def test_an_exported_model_as_teacher_must_agree_with_its_metadata(trained: list[str], tmp_path: Path) -> None:
    from common.errors import ConfigError
    from config.schema import TeacherConfig
    from models import build_teacher
    from models.embedder import OnnxEmbedder

    onnx_path = tmp_path / "as_teacher.onnx"
    assert invoke("export", trained + [f"export.output={onnx_path}"])[0] == 0
    teacher = build_teacher(TeacherConfig(arch="onnx", weights=str(onnx_path), embedding_size=16), 16, "cpu")
    assert isinstance(teacher, OnnxEmbedder) and teacher.preprocessing.input_size == 16
    assert not teacher.from_metadata  # agreed with, not taken from
    wrong = TeacherConfig(arch="onnx", weights=str(onnx_path), embedding_size=16, color="BGR", mean=[0.0] * 3)
    with pytest.raises(ConfigError, match=r"teacher.color = 'BGR' but the model's metadata says 'RGB'") as err:
        build_teacher(wrong, 16, "cpu")
    assert "teacher.mean" in str(err.value) and "teacher.std" not in str(err.value)


def test_a_malformed_evaluate_summary_stops_the_export_before_anything_is_written(trained: list[str],
                                                                                 tmp_path: Path) -> None:
    target = tmp_path / "student.onnx"
    code, out, first = invoke("export", trained + [f"export.output={target}"])
    assert code == 0 and first is not None, out
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    summary_file = _run_dir(trained) / "evaluate.json"
    saved = summary_file.read_bytes() if summary_file.exists() else None
    try:
        for wrong in ("[1]", '{"models": [1]}', '{"model": "student", "sets": {"lfw": 3}}'):
            summary_file.write_text(wrong)
            code, out, _ = invoke("export", trained + [f"export.output={target}"])
            assert code == 1 and "not a readable evaluate summary" in out and "Traceback" not in out, wrong
            assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # the old export and its card
    finally:
        summary_file.unlink()
        if saved is not None:
            summary_file.write_bytes(saved)
    card = json.loads((tmp_path / "student.card.json").read_text())
    import hashlib

    assert card["onnx"]["sha256"] == hashlib.sha256(target.read_bytes()).hexdigest()


def test_an_output_that_is_a_folder_is_refused_naming_it(trained: list[str], tmp_path: Path) -> None:
    folder = tmp_path / "model.onnx"
    folder.mkdir()
    code, out, _ = invoke("export", trained + [f"export.output={folder}"])
    assert code == 2 and f"'{folder}' is a folder" in out and ".tmp" not in out
    assert list(tmp_path.iterdir()) == [folder] and not any(folder.iterdir())


def test_exporting_over_the_source_model_is_refused(trained: list[str], tmp_path: Path) -> None:
    source = tmp_path / "model.onnx"  # a checkpoint whose name ends in .onnx
    source.write_bytes((_run_dir(trained) / "backbone.pth").read_bytes())
    code, out, _ = invoke("export", trained + [f"export.model={source}", f"export.output={source}"])
    assert code == 2 and "overwrite" in out and "Traceback" not in out
    assert source.read_bytes() == (_run_dir(trained) / "backbone.pth").read_bytes()
