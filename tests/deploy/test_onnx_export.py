"""ONNX export of a backbone: dynamic batch, metadata, and a verification that catches a wrong model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from config.schema import StudentConfig
from deploy.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx, verify_onnx
from models import build_student
from models.preprocess import student_input


def _student(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_student(StudentConfig(arch="mobilefacenet", embedding_size=8), 16).eval()


def _faces(n: int = 7) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)


def test_export_matches_torch_at_any_batch_size_and_keeps_metadata(tmp_path: Path) -> None:
    module = _student(0)
    path = tmp_path / "s.onnx"
    export_onnx(module, path, 16, {"icdface.x": "1"}, opset=17)
    model = onnx.load(str(path))
    assert {p.key: p.value for p in model.metadata_props} == {"icdface.x": "1"}
    assert model.opset_import[0].version == 17
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = student_input(torch.from_numpy(_faces(5)))
    with torch.no_grad():
        expected = module(x).numpy()
    got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    check = verify_onnx(path, module, _faces())
    assert check.passed and set(check.min_cosine) == {1, 7}
    assert next(module.parameters()).dtype == torch.float32 and not module.training


def test_verification_fails_for_another_model(tmp_path: Path) -> None:
    path = tmp_path / "s.onnx"
    export_onnx(_student(0), path, 16, {}, opset=17)
    check = verify_onnx(path, _student(1), _faces())
    assert not check.passed and min(check.min_cosine.values()) < check.threshold


def test_float16_export_leaves_the_module_in_float32(tmp_path: Path) -> None:
    module = _student(0)
    path = tmp_path / "h.onnx"
    export_onnx(module, path, 16, {}, opset=17, dtype="float16")
    assert next(module.parameters()).dtype == torch.float32
    check = verify_onnx(path, module, _faces(), "float16")
    assert check.passed and check.threshold == 0.999


def test_verification_needs_seven_faces(tmp_path: Path) -> None:
    path = tmp_path / "s.onnx"
    export_onnx(_student(0), path, 16, {}, opset=17)
    with pytest.raises(ValueError, match="at least 7"):
        verify_onnx(path, _student(0), _faces(3))


@pytest.mark.parametrize("arch", ["iresnet18", "timm/resnet18"])
def test_other_students_export_and_verify(arch: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = build_student(StudentConfig(arch=arch, embedding_size=8), 16).eval()
    export_onnx(module, tmp_path / "s.onnx", 16, {}, opset=17)
    assert verify_onnx(tmp_path / "s.onnx", module, _faces()).passed
