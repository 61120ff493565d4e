"""`models.mobilefacenet`: forward shape and the insightface state-dict layout."""
from __future__ import annotations

import torch

from models import create_backbone


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
