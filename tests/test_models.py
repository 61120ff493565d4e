"""Tests for models/: insightface key contracts, weight loading, backbones, embedders, build_teacher."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from common.errors import ConfigError
from config.schema import StudentConfig, TeacherConfig
from models import (
    OnnxEmbedder,
    TorchEmbedder,
    TorchScriptEmbedder,
    build_student,
    build_teacher,
    create_backbone,
    list_models,
    load_backbone_weights,
    sha256_file,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL_ONNX = SHARED / "models" / "mobileface.onnx"
IRESNET_DEPTHS = {"iresnet18": [2, 2, 2, 2], "iresnet50": [3, 4, 14, 3]}


def _bn(prefix: str, channels: int) -> list[tuple[str, tuple[int, ...]]]:
    return [(f"{prefix}.weight", (channels,)), (f"{prefix}.bias", (channels,)),
            (f"{prefix}.running_mean", (channels,)), (f"{prefix}.running_var", (channels,)),
            (f"{prefix}.num_batches_tracked", ())]


def insightface_iresnet_keys(depths: list[int], embedding_size: int, image_size: int) -> list[tuple[str, tuple]]:
    """(key, shape) of insightface arcface_torch `backbones/iresnet.py`, written out from its layout."""
    keys = [("conv1.weight", (64, 3, 3, 3))] + _bn("bn1", 64) + [("prelu.weight", (64,))]
    inplanes = 64
    for stage, (planes, blocks) in enumerate(zip([64, 128, 256, 512], depths), start=1):
        for block in range(blocks):
            p = f"layer{stage}.{block}"
            cin = inplanes if block == 0 else planes
            keys += _bn(f"{p}.bn1", cin)
            keys += [(f"{p}.conv1.weight", (planes, cin, 3, 3))]
            keys += _bn(f"{p}.bn2", planes)
            keys += [(f"{p}.prelu.weight", (planes,)), (f"{p}.conv2.weight", (planes, planes, 3, 3))]
            keys += _bn(f"{p}.bn3", planes)
            if block == 0:
                keys += [(f"{p}.downsample.0.weight", (planes, cin, 1, 1))] + _bn(f"{p}.downsample.1", planes)
        inplanes = planes
    side = image_size // 16
    keys += _bn("bn2", 512)
    keys += [("fc.weight", (embedding_size, 512 * side * side)), ("fc.bias", (embedding_size,))]
    keys += _bn("features", embedding_size)
    return keys


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


def random_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))


class TinyNet(nn.Module):
    """Small NCHW model for export round trips: [B, 3, S, S] -> [B, 16]."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8 * 4, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(torch.relu(self.conv(x)), 2)
        return self.fc(torch.flatten(x, 1))


class NhwcWrapper(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.permute(0, 3, 1, 2))


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path, dynamic: bool = True) -> Path:
    axes = {"images": {0: "batch"}, "emb": {0: "batch"}} if dynamic else None
    torch.onnx.export(model.eval(), (example,), str(path), input_names=["images"], output_names=["emb"],
                      dynamic_axes=axes, opset_version=17, dynamo=False)
    return path


def reference_input(images: torch.Tensor, mean: list[float], std: list[float], bgr: bool) -> torch.Tensor:
    """Independent preprocessing: (pixel/255 - mean)/std in model channel order, NCHW."""
    x = images.double().permute(0, 3, 1, 2)
    if bgr:
        x = x[:, [2, 1, 0]]
    m = torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1)
    return ((x / 255.0 - m) / s).float()


@pytest.mark.parametrize("arch", sorted(IRESNET_DEPTHS))
def test_iresnet_state_dict_matches_insightface(arch: str) -> None:
    model = create_backbone(arch, 512, 112)
    actual = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert actual == insightface_iresnet_keys(IRESNET_DEPTHS[arch], 512, 112)


def test_iresnet_fc_follows_image_size() -> None:
    model = create_backbone("iresnet18", 64, 32).eval()
    assert tuple(model.fc.weight.shape) == (64, 512 * 2 * 2)
    assert model(torch.randn(3, 3, 32, 32)).shape == (3, 64)


def test_insightface_plain_state_dict_reloads(tmp_path: Path) -> None:
    source = create_backbone("iresnet18", 32, 16).eval()
    with torch.no_grad():
        for buf in source.buffers():
            if buf.dtype.is_floating_point:
                buf.uniform_(0.5, 1.5)
    plain = tmp_path / "backbone.pth"
    torch.save(source.state_dict(), plain)
    wrapped = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}, "epoch": 3}, wrapped)
    x = torch.randn(2, 3, 16, 16)
    for path in (plain, wrapped):
        target = create_backbone("iresnet18", 32, 16)
        digest = load_backbone_weights(target, path)
        assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
        assert torch.equal(target.eval()(x), source(x))


def test_key_mismatch_lists_keys(tmp_path: Path) -> None:
    path = tmp_path / "r18.pth"
    torch.save(create_backbone("iresnet18", 32, 16).state_dict(), path)
    with pytest.raises(ConfigError, match=r"missing keys: .*layer1\.2\."):
        load_backbone_weights(create_backbone("iresnet34", 32, 16), path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_backbone_weights(create_backbone("iresnet18", 32, 16), tmp_path / "absent.pth")


def test_mobilefacenet_forward_and_layout() -> None:
    model = create_backbone("mobilefacenet", 128, 32).eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 128)
    shapes = {k: tuple(v.shape) for k, v in create_backbone("mobilefacenet", 512, 112).state_dict().items()}
    assert shapes["layers.0.layers.0.weight"] == (128, 3, 3, 3)
    assert shapes["layers.1.layers.0.weight"] == (128, 2, 3, 3)
    assert shapes["layers.3.layers.3.layers.1.layers.0.weight"] == (128, 1, 3, 3)
    assert shapes["layers.6.layers.2.layers.0.weight"] == (256, 512, 1, 1)
    assert shapes["layers.7.layers.1.layers.2.layers.1.running_var"] == (256,)
    assert shapes["conv_sep.layers.0.weight"] == (512, 256, 1, 1)
    assert shapes["features.layers.0.layers.0.weight"] == (512, 1, 7, 7)
    assert shapes["features.layers.2.weight"] == (512, 512)
    assert shapes["features.layers.3.running_mean"] == (512,)
    assert "features.layers.2.bias" not in shapes


def test_timm_backbones() -> None:
    resnet = create_backbone("timm/resnet18", 64, 32, dropout=0.1).eval()
    assert resnet(torch.randn(2, 3, 32, 32)).shape == (2, 64)
    vit = create_backbone("timm/vit_tiny_patch16_224", 24, 32).eval()
    assert vit(torch.randn(2, 3, 32, 32)).shape == (2, 24)


def test_registry_errors() -> None:
    assert {"iresnet18", "iresnet34", "iresnet50", "iresnet100", "mobilefacenet"} <= set(list_models())
    with pytest.raises(ConfigError, match="iresnet50"):
        create_backbone("resnet9000", 512)
    with pytest.raises(ConfigError, match="multiple of 16"):
        create_backbone("iresnet18", 512, 24)
    with pytest.raises(ConfigError, match="timm"):
        create_backbone("timm/not_a_real_model_xyz", 512, 32)
    with pytest.raises(ConfigError, match="student.arch"):
        build_student(StudentConfig(arch="nope"), 32)
    student = build_student(StudentConfig(arch="mobilefacenet", embedding_size=48), 32).eval()
    assert student(torch.randn(1, 3, 32, 32)).shape == (1, 48)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_onnx_round_trip(tmp_path: Path, layout: str) -> None:
    net = TinyNet().eval()
    exported = net if layout == "NCHW" else NhwcWrapper(net)
    example = torch.zeros(2, 3, 16, 16) if layout == "NCHW" else torch.zeros(2, 16, 16, 3)
    path = export_onnx(exported, example, tmp_path / "tiny.onnx")
    mean, std, bgr = [0.2, 0.4, 0.6], [0.3, 0.25, 0.5], layout == "NHWC"
    onnx_emb = OnnxEmbedder(path, input_layout=layout, color="BGR" if bgr else "RGB", mean=mean, std=std)
    assert onnx_emb.embedding_size == 16
    assert onnx_emb.fingerprint()["weights_sha256"] == sha256_file(path)
    assert onnx_emb.fingerprint()["preprocessing"]["layout"] == layout
    for batch in (1, 5):
        images = random_images(batch, 16, seed=batch)
        with torch.no_grad():
            expected = net(reference_input(images, mean, std, bgr))
        got = onnx_emb.embed(images)
        assert got.dtype == torch.float32 and got.shape == (batch, 16)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    torch_emb = TorchEmbedder(net, "tiny", "-", 16, mean, std, "BGR" if bgr else "RGB", "cpu")
    larger = random_images(3, 40, seed=9)
    torch.testing.assert_close(onnx_emb.embed(larger), torch_emb.embed(larger), atol=1e-4, rtol=1e-4)


def test_onnx_fixed_batch_and_layout_check(tmp_path: Path) -> None:
    net = TinyNet().eval()
    path = export_onnx(net, torch.zeros(2, 3, 16, 16), tmp_path / "fixed.onnx", dynamic=False)
    images = random_images(5, 16)
    got = OnnxEmbedder(path, "NCHW").embed(images)
    with torch.no_grad():
        expected = net(reference_input(images, [0.5] * 3, [0.5] * 3, False))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    with pytest.raises(ConfigError, match="input_layout"):
        OnnxEmbedder(path, "NHWC")
    with pytest.raises(ConfigError, match="input_size"):
        OnnxEmbedder(path, "NCHW", input_size=32)


def test_torchscript_round_trip(tmp_path: Path) -> None:
    net = TinyNet().eval()
    path = tmp_path / "tiny.pt"
    torch.jit.trace(net, torch.zeros(1, 3, 16, 16)).save(str(path))
    images = random_images(4, 16)
    scripted = TorchScriptEmbedder(path, 16)
    torch.testing.assert_close(scripted.embed(images), TorchEmbedder(net, "tiny", "-", 16).embed(images))
    cfg = TeacherConfig(arch="torchscript", weights=str(path), embedding_size=16)
    teacher = build_teacher(cfg, 16, "cpu")
    assert teacher.fingerprint()["weights_sha256"] == sha256_file(path)
    torch.testing.assert_close(teacher.embed(images), scripted.embed(images))


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
