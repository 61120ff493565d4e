"""`models.size`: parameter and FLOP counts, torch and ONNX by one rule."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from models import create_backbone
from models.size import count_text, onnx_size, parameter_count, torch_flops


class Tiny(nn.Module):
    """conv 3->4 (3x3, pad 1) on 8x8, then linear 256 -> 5: 2*(8*8*4)*(3*9) + 2*256*5 FLOPs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.fc = nn.Linear(256, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def test_counts_of_a_small_network_by_hand() -> None:
    m = Tiny()
    assert parameter_count(m) == 4 * 3 * 9 + 256 * 5 + 5
    assert torch_flops(m, 8) == 2 * (8 * 8 * 4) * (3 * 9) + 2 * 256 * 5
    assert m.training  # left as it was


def test_onnx_count_equals_torch_count(tmp_path: Path) -> None:
    m = create_backbone("mobilefacenet", 16, image_size=16).eval()
    path = tmp_path / "m.onnx"
    torch.onnx.export(m, torch.zeros(1, 3, 16, 16), str(path), dynamo=False, input_names=["input"],
                      output_names=["embedding"], dynamic_axes={"input": {0: "batch"}})
    got = onnx_size(path)
    assert got["flops"] == torch_flops(m, 16)
    # the exporter folds BatchNorm into the convolutions, so the file holds a little fewer weights
    assert got["parameters"] == pytest.approx(parameter_count(m), rel=0.02)
    assert got["parameters"] <= parameter_count(m)


def test_onnx_count_of_the_real_teacher(shared_onnx: Path) -> None:
    got = onnx_size(shared_onnx)  # weights in Constant nodes, shapes only known by running it
    assert got["parameters"] == pytest.approx(0.55e6, rel=0.05) and got["flops"] and got["flops"] > 1e7


@pytest.mark.parametrize("value, text", [(None, "n/a"), (999, "999"), (1500, "1.5k"), (874648576, "875M"),
                                         (2.3e9, "2.3G")])
def test_count_text(value: int | None, text: str) -> None:
    assert count_text(None if value is None else int(value)) == text
