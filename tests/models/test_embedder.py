"""`models.embedder`: ONNX, TorchScript and torch embedders against an independent preprocessing."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from common.errors import ConfigError
from config.schema import TeacherConfig
from models import OnnxEmbedder, TorchEmbedder, TorchScriptEmbedder, build_teacher, sha256_file


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


class ShapedOutput(nn.Module):
    """[B, 3, S, S] -> [B, *trailing]: per-image channel means tiled into the given shape."""

    def __init__(self, *trailing: int) -> None:
        super().__init__()
        self.trailing = trailing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        means = x.mean(dim=(2, 3))[:, :1]
        return means.reshape(x.shape[0], *([1] * len(self.trailing))).expand(x.shape[0], *self.trailing) + 0


def test_onnx_output_of_rank_three_is_refused(tmp_path: Path) -> None:
    path = export_onnx(ShapedOutput(4, 2), torch.zeros(2, 3, 16, 16), tmp_path / "rank3.onnx")
    with pytest.raises(ConfigError, match=r"rank3\.onnx.*output .*\[1, 4, 2\]"):
        OnnxEmbedder(path, "NCHW")
    with pytest.raises(ConfigError, match=r"rank3\.onnx.*\[1, 4, 2\]"):
        build_teacher(TeacherConfig(arch="onnx", weights=str(path), embedding_size=8), 16, "cpu")


def test_onnx_output_with_unit_trailing_dims_is_squeezed(tmp_path: Path) -> None:
    path = export_onnx(ShapedOutput(4, 1, 1), torch.zeros(2, 3, 16, 16), tmp_path / "unit.onnx")
    embedder = OnnxEmbedder(path, "NCHW")
    assert embedder.embedding_size == 4
    assert embedder.embed(random_images(3, 16)).shape == (3, 4)


def test_embed_views_are_the_image_then_its_horizontal_flip() -> None:
    emb = TorchEmbedder(TinyNet().eval(), "tiny", "-", 16)
    images = random_images(3, 16, seed=5)
    views = emb.embed_views(images)
    assert views.shape == (3, 2, 16)
    mirrored = images.flip(2)  # [B, H, W, C]: W is axis 2
    torch.testing.assert_close(views[:, 0], emb.embed(images))
    torch.testing.assert_close(views[:, 1], emb.embed(mirrored))
    assert not torch.allclose(views[:, 0], views[:, 1])  # the model is not flip-invariant, so the order shows
