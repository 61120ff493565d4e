"""`models.build_teacher`: torch, ONNX and TorchScript teachers, weight and dimension errors."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common.errors import ConfigError
from config.schema import TeacherConfig
from models import build_teacher, create_backbone
from tests.conftest import SHARED
from tests.models.test_embedder import TinyNet, export_onnx, random_images, reference_input

REAL_ONNX = SHARED / "models" / "mobileface.onnx"


def face_image(shift: int = 0) -> np.ndarray:
    """A crude 112x112 frontal face (skin oval, hair, eyes, brows, nose, mouth), symmetric when shift=0."""
    yy, xx = np.mgrid[0:112, 0:112].astype(np.float32)
    img = np.zeros((112, 112, 3), np.float32) + np.array([60, 70, 90], np.float32)
    img[((xx - 56) / 34) ** 2 + ((yy - 60) / 44) ** 2 <= 1] = [205, 160, 130]
    img[(((xx - 56) / 38) ** 2 + ((yy - 40) / 34) ** 2 <= 1) & (yy < 34)] = [50, 35, 25]
    for cx in (38 + shift, 74 - shift):
        img[((xx - cx) / 7) ** 2 + ((yy - 52) / 3.5) ** 2 <= 1] = [250, 250, 250]
        img[((xx - cx) / 3) ** 2 + ((yy - 52) / 3) ** 2 <= 1] = [40, 30, 20]
        img[(abs(xx - cx) < 9) & (abs(yy - 43) < 1.5)] = [70, 50, 35]
    img[(abs(xx - 56) < 3) & (yy > 55) & (yy < 74)] = [185, 135, 110]
    img[((xx - 56) / 12) ** 2 + ((yy - 86) / 3) ** 2 <= 1] = [160, 60, 60]
    return img.astype(np.uint8)


def test_build_teacher_torch_arch(tmp_path: Path) -> None:
    source = create_backbone("iresnet18", 32, 16).eval()
    path = tmp_path / "backbone.pth"
    torch.save(source.state_dict(), path)
    teacher = build_teacher(TeacherConfig(arch="iresnet18", weights=str(path), embedding_size=32), 16, "cpu")
    fingerprint = teacher.fingerprint()
    assert fingerprint["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert fingerprint["input_size"] == 16 and fingerprint["arch"] == "iresnet18"
    images = random_images(3, 16)
    with torch.no_grad():
        expected = source(reference_input(images, [0.5] * 3, [0.5] * 3, False))
    torch.testing.assert_close(teacher.embed(images), expected, rtol=1e-3, atol=1e-3)
    with pytest.raises(ConfigError, match=r"teacher\.embedding_size.*64.*32"):
        build_teacher(TeacherConfig(arch="iresnet18", weights=str(path), embedding_size=64), 16, "cpu")


def test_build_teacher_weights_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "backbone.pth"
    for arch in ("iresnet50", "onnx", "torchscript"):
        with pytest.raises(ConfigError, match=r"teacher\.weights.*nowhere"):
            build_teacher(TeacherConfig(arch=arch, weights=str(missing)), 16, "cpu")
    with pytest.raises(ConfigError, match=r"teacher\.weights"):
        build_teacher(TeacherConfig(arch="iresnet18", weights=""), 16, "cpu")
    with pytest.raises(ConfigError, match=r"teacher\.arch"):
        build_teacher(TeacherConfig(arch="bogus", weights=str(missing)), 16, "cpu")


def test_onnx_teacher_dim_mismatch(tmp_path: Path) -> None:
    path = export_onnx(TinyNet(), torch.zeros(1, 3, 16, 16), tmp_path / "tiny.onnx")
    cfg = TeacherConfig(arch="onnx", weights=str(path), embedding_size=512)
    with pytest.raises(ConfigError, match=r"teacher\.embedding_size is 512.*16-d"):
        build_teacher(cfg, 16, "cpu")


def test_real_mobileface_onnx_teacher() -> None:
    if not REAL_ONNX.is_file():
        pytest.skip(f"{REAL_ONNX} is absent (../shared is not part of user checkouts)")
    cfg = TeacherConfig(arch="onnx", weights=str(REAL_ONNX), embedding_size=256, input_layout="NHWC",
                        mean=[0.0, 0.0, 0.0], std=[1 / 255] * 3)
    teacher = build_teacher(cfg, 112, "cpu")
    assert teacher.fingerprint()["input_size"] == 112
    face = torch.from_numpy(face_image())[None]
    batch = torch.cat([face, face.flip(2), random_images(1, 112), torch.from_numpy(face_image(shift=6))[None]])
    emb = F.normalize(teacher.embed(batch), dim=1)
    assert emb.shape == (4, 256)
    flip_sim, noise_sim, other_sim = (emb[0] @ emb[1]).item(), (emb[0] @ emb[2]).item(), (emb[0] @ emb[3]).item()
    assert flip_sim > 0.9
    assert flip_sim > other_sim + 0.1 and flip_sim > noise_sim + 0.5
