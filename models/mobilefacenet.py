"""MobileFaceNet with the `state_dict` layout of insightface arcface_torch `backbones/mobilefacenet.py`.

Top-level keys: `layers.<i>...` (stem, depthwise stages and residual stacks), `conv_sep...` and
`features.layers.{0,2,3}...` (global depthwise conv, linear, BatchNorm1d). The global depthwise kernel
is image_size/16 (7 at 112), so any image_size that is a multiple of 16 works.
"""
from __future__ import annotations

import torch
from torch import nn

from config.choices import check_image_side
from models.registry import register_model


def conv_bn(in_channels: int, out_channels: int, kernel: int = 1, stride: int = 1, padding: int = 0,
            groups: int = 1) -> list[nn.Module]:
    """Bias-free conv followed by BatchNorm2d (the two modules, for a Sequential)."""
    return [
        nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
    ]


class ConvBlock(nn.Module):
    """Conv -> BN -> PReLU (`layers.0/1/2`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 1, stride: int = 1, padding: int = 0,
                 groups: int = 1) -> None:
        super().__init__()
        self.layers = nn.Sequential(*conv_bn(in_channels, out_channels, kernel, stride, padding, groups),
                                    nn.PReLU(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class LinearBlock(nn.Module):
    """Conv -> BN without activation (`layers.0/1`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 1, stride: int = 1, padding: int = 0,
                 groups: int = 1) -> None:
        super().__init__()
        self.layers = nn.Sequential(*conv_bn(in_channels, out_channels, kernel, stride, padding, groups))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DepthWise(nn.Module):
    """Inverted bottleneck: 1x1 expand to `hidden`, depthwise 3x3 (stride), 1x1 linear projection."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int, stride: int = 2,
                 residual: bool = False) -> None:
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(
            ConvBlock(in_channels, hidden),
            ConvBlock(hidden, hidden, kernel=3, stride=stride, padding=1, groups=hidden),
            LinearBlock(hidden, out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return x + out if self.residual else out


class Residual(nn.Module):
    """A stack of `num_blocks` stride-1 residual `DepthWise` blocks of width `channels`."""

    def __init__(self, channels: int, num_blocks: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(*(DepthWise(channels, channels, hidden, stride=1, residual=True)
                                      for _ in range(num_blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class GDC(nn.Module):
    """Global depthwise conv (kernel = feature-map side) -> flatten -> dropout -> Linear -> BatchNorm1d."""

    def __init__(self, embedding_size: int, side: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            LinearBlock(512, 512, kernel=side, groups=512),
            nn.Flatten(),
            nn.Linear(512, embedding_size, bias=False),
            nn.BatchNorm1d(embedding_size),
        )
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers[1](self.layers[0](x))
        return self.layers[3](self.layers[2](self.dropout(x)))


class MobileFaceNet(nn.Module):
    """MobileFaceNet: input float [B, 3, S, S] normalised (x/255 - 0.5)/0.5 -> embeddings [B, D].

    `blocks` and `scale` follow insightface (`mbf`: (1, 4, 6, 2), scale 2; `mbf_large`: (2, 8, 12, 4), 4).
    """

    def __init__(self, embedding_size: int = 512, image_size: int = 112, dropout: float = 0.0,
                 blocks: tuple[int, int, int, int] = (1, 4, 6, 2), scale: int = 2) -> None:
        super().__init__()
        check_image_side(image_size, "image_size")
        narrow, wide = 64 * scale, 128 * scale
        self.layers = nn.ModuleList([ConvBlock(3, narrow, kernel=3, stride=2, padding=1)])
        if blocks[0] == 1:
            self.layers.append(ConvBlock(narrow, narrow, kernel=3, stride=1, padding=1, groups=64))
        else:
            self.layers.append(Residual(narrow, blocks[0], hidden=128))
        self.layers.extend([
            DepthWise(narrow, narrow, hidden=128),
            Residual(narrow, blocks[1], hidden=128),
            DepthWise(narrow, wide, hidden=256),
            Residual(wide, blocks[2], hidden=256),
            DepthWise(wide, wide, hidden=512),
            Residual(wide, blocks[3], hidden=256),
        ])
        self.conv_sep = ConvBlock(wide, 512)
        self.features = GDC(embedding_size, image_size // 16, dropout)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: float [B, 3, S, S] -> un-normalised embeddings [B, embedding_size]."""
        for layer in self.layers:
            x = layer(x)
        return self.features(self.conv_sep(x))


@register_model("mobilefacenet")
def mobilefacenet(embedding_size: int = 512, image_size: int = 112, dropout: float = 0.0) -> MobileFaceNet:
    """insightface `mbf`: blocks (1, 4, 6, 2), scale 2."""
    return MobileFaceNet(embedding_size, image_size, dropout)
