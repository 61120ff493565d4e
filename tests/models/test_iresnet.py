"""`models.iresnet`: the insightface arcface_torch state-dict layout and the fc size per image size."""
from __future__ import annotations

import pytest
import torch

from models import create_backbone

IRESNET_DEPTHS = {"iresnet18": [2, 2, 2, 2], "iresnet50": [3, 4, 14, 3]}


def _bn(prefix: str, channels: int) -> list[tuple[str, tuple[int, ...]]]:
    return [(f"{prefix}.weight", (channels,)), (f"{prefix}.bias", (channels,)),
            (f"{prefix}.running_mean", (channels,)), (f"{prefix}.running_var", (channels,)),
            (f"{prefix}.num_batches_tracked", ())]


def insightface_iresnet_keys(depths: list[int], embedding_size: int, image_size: int) -> list[tuple[str, tuple]]:
    """(key, shape) of insightface arcface_torch `backbones/iresnet.py`, written out from its layout."""
    keys = [("conv1.weight", (64, 3, 3, 3))] + _bn("bn1", 64) + [("prelu.weight", (64,))]
    inplanes = 64
    for stage, (planes, blocks) in enumerate(zip([64, 128, 256, 512], depths, strict=True), start=1):
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


@pytest.mark.parametrize("arch", sorted(IRESNET_DEPTHS))
def test_iresnet_state_dict_matches_insightface(arch: str) -> None:
    model = create_backbone(arch, 512, 112)
    actual = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert actual == insightface_iresnet_keys(IRESNET_DEPTHS[arch], 512, 112)


def test_iresnet_fc_follows_image_size() -> None:
    model = create_backbone("iresnet18", 64, 32).eval()
    assert tuple(model.fc.weight.shape) == (64, 512 * 2 * 2)
    assert model(torch.randn(3, 3, 32, 32)).shape == (3, 64)
