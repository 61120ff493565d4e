"""IResNet-18/34/50/100 with the exact `state_dict` layout of insightface arcface_torch `backbones/iresnet.py`.

Key names and shapes match `backbone.pth` files trained by insightface, so they load with strict=True:
conv1, bn1, prelu, layer1..layer4 (IBasicBlock: bn1, conv1, bn2, prelu, conv2, bn3, downsample.0/.1),
bn2, dropout (no state), fc (in_features 512 * (image_size/16)^2), features (BatchNorm1d).
"""
from __future__ import annotations

import torch
from torch import nn

from config.choices import check_image_side
from models.registry import register_model

BN_EPS = 1e-05
STAGE_WIDTHS = (64, 128, 256, 512)
DEPTHS: dict[str, tuple[int, int, int, int]] = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
}


class IBasicBlock(nn.Module):
    """Pre-activation-style residual block: BN-conv3x3-BN-PReLU-conv3x3(stride)-BN, plus shortcut."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels, eps=BN_EPS)
        self.conv1 = nn.Conv2d(in_channels, channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels, eps=BN_EPS)
        self.prelu = nn.PReLU(channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels, eps=BN_EPS)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, in_channels, H, W] -> [B, channels, H/stride, W/stride]."""
        residual = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return residual + shortcut


def _make_stage(in_channels: int, channels: int, blocks: int) -> nn.Sequential:
    """One stage: a stride-2 block with a 1x1-conv + BN shortcut, then `blocks - 1` identity blocks."""
    downsample = nn.Sequential(
        nn.Conv2d(in_channels, channels, kernel_size=1, stride=2, bias=False),
        nn.BatchNorm2d(channels, eps=BN_EPS),
    )
    layers = [IBasicBlock(in_channels, channels, stride=2, downsample=downsample)]
    layers.extend(IBasicBlock(channels, channels) for _ in range(blocks - 1))
    return nn.Sequential(*layers)


class IResNet(nn.Module):
    """IResNet backbone: input float [B, 3, S, S] normalised (x/255 - 0.5)/0.5 -> embeddings [B, D].

    S = image_size (multiple of 16); the last feature map is S/16 x S/16 (7 x 7 at 112).
    As in insightface, the final BatchNorm1d's scale is fixed to 1 and not trained.
    """

    # Set with setattr in __init__ so the state_dict keys stay insightface's `layer1..layer4`.
    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(self, depths: tuple[int, int, int, int], embedding_size: int = 512, image_size: int = 112,
                 dropout: float = 0.0) -> None:
        super().__init__()
        check_image_side(image_size, "image_size")
        side = image_size // 16
        self.conv1 = nn.Conv2d(3, STAGE_WIDTHS[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STAGE_WIDTHS[0], eps=BN_EPS)
        self.prelu = nn.PReLU(STAGE_WIDTHS[0])
        in_channels = STAGE_WIDTHS[0]
        for index, (channels, blocks) in enumerate(zip(STAGE_WIDTHS, depths, strict=False), start=1):
            setattr(self, f"layer{index}", _make_stage(in_channels, channels, blocks))
            in_channels = channels
        self.bn2 = nn.BatchNorm2d(in_channels, eps=BN_EPS)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(in_channels * side * side, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=BN_EPS)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.1)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.ones_(self.features.weight)
        self.features.weight.requires_grad = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: float [B, 3, S, S] -> un-normalised embeddings [B, embedding_size]."""
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.bn2(x), 1)
        return self.features(self.fc(self.dropout(x)))


@register_model("iresnet18")
def iresnet18(embedding_size: int = 512, image_size: int = 112, dropout: float = 0.0) -> IResNet:
    """IResNet-18, stage depths (2, 2, 2, 2)."""
    return IResNet(DEPTHS["iresnet18"], embedding_size, image_size, dropout)


@register_model("iresnet34")
def iresnet34(embedding_size: int = 512, image_size: int = 112, dropout: float = 0.0) -> IResNet:
    """IResNet-34, stage depths (3, 4, 6, 3)."""
    return IResNet(DEPTHS["iresnet34"], embedding_size, image_size, dropout)


@register_model("iresnet50")
def iresnet50(embedding_size: int = 512, image_size: int = 112, dropout: float = 0.0) -> IResNet:
    """IResNet-50, stage depths (3, 4, 14, 3)."""
    return IResNet(DEPTHS["iresnet50"], embedding_size, image_size, dropout)


@register_model("iresnet100")
def iresnet100(embedding_size: int = 512, image_size: int = 112, dropout: float = 0.0) -> IResNet:
    """IResNet-100, stage depths (3, 13, 30, 3)."""
    return IResNet(DEPTHS["iresnet100"], embedding_size, image_size, dropout)
