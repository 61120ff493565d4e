"""`models.registry`: built-in and timm backbones (output follows the image, gradients reach the body), arch errors."""
from __future__ import annotations

import pytest
import torch

from common.errors import ConfigError
from config.schema import StudentConfig
from models import build_student, create_backbone, list_models


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


def _timm_images() -> torch.Tensor:
    """Three normalised 32x32 images: two different ones, then the first again."""
    gen = torch.Generator().manual_seed(1)
    a, b = torch.rand(2, 3, 32, 32, generator=gen) * 2 - 1
    return torch.stack([a, b, a])


def test_timm_backbone_output_depends_on_the_image() -> None:
    torch.manual_seed(0)
    model = create_backbone("timm/resnet18", 16, 32).eval()
    with torch.no_grad():
        emb = model(_timm_images())
    assert emb.shape == (3, 16) and torch.isfinite(emb).all()
    torch.testing.assert_close(emb[0], emb[2])
    assert (emb[0] - emb[1]).abs().max() > 1e-3 * emb.abs().max()


def test_timm_backbone_gradients_reach_the_body() -> None:
    torch.manual_seed(0)
    model = create_backbone("timm/resnet18", 16, 32).eval()  # eval: a train-mode BatchNorm1d makes the sum constant
    model(_timm_images()).sum().backward()
    body_grads = [p.grad for p in model.body.parameters() if p.grad is not None]
    assert body_grads, "no body parameter received a gradient"
    assert any(g.abs().sum() > 0 for g in body_grads)
    assert all(torch.isfinite(g).all() for g in body_grads)
