"""Name -> backbone factory registry, plus `timm/<name>` backbones with an `EmbeddingHead`.

Every backbone takes float NCHW input normalised as (x/255 - 0.5)/0.5 (insightface convention, also
for timm models: timm's ImageNet mean/std are NOT used) at `image_size` x `image_size`, and returns
un-normalised embeddings [B, embedding_size].
"""
from __future__ import annotations

import importlib
from typing import Callable

import torch
from torch import nn

from common.errors import ConfigError
from config.choices import check_image_side
from models.head import EmbeddingHead

BackboneFactory = Callable[[int, int, float], nn.Module]
"""factory(embedding_size, image_size, dropout) -> nn.Module."""

TIMM_PREFIX = "timm/"
_BUILTIN_MODULES = ("models.iresnet", "models.mobilefacenet")
_REGISTRY: dict[str, BackboneFactory] = {}


def register_model(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator registering `factory(embedding_size, image_size, dropout)` under `name`."""

    def decorate(factory: BackboneFactory) -> BackboneFactory:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"backbone {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return decorate


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def list_models() -> list[str]:
    """Registered face backbones (sorted); any `timm/<name>` is accepted in addition."""
    _load_builtins()
    return sorted(_REGISTRY)


def is_known_arch(arch: str) -> bool:
    """True for a registered backbone or a `timm/<name>` that timm knows."""
    if arch.startswith(TIMM_PREFIX):
        import timm

        return bool(arch[len(TIMM_PREFIX):]) and timm.is_model(arch[len(TIMM_PREFIX):])
    return arch in list_models()


class TimmBackbone(nn.Module):
    """A timm feature extractor (`num_classes=0`, pooled output) followed by an `EmbeddingHead`."""

    def __init__(self, body: nn.Module, feature_dim: int, embedding_size: int, dropout: float) -> None:
        super().__init__()
        self.body = body
        self.head = EmbeddingHead(feature_dim, embedding_size, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: float [B, 3, S, S] normalised (x/255 - 0.5)/0.5 -> [B, embedding_size]."""
        return self.head(self.body(x))


def _create_timm(name: str, embedding_size: int, image_size: int, dropout: float) -> nn.Module:
    import timm

    if not name or not timm.is_model(name):
        raise ConfigError(f"unknown timm model {name!r} (arch 'timm/{name}'); see timm.list_models()")
    try:
        body = timm.create_model(name, num_classes=0, pretrained=False, img_size=image_size)
    except TypeError as err:
        if "img_size" not in str(err):
            raise
        body = timm.create_model(name, num_classes=0, pretrained=False)
    was_training = body.training
    body.eval()
    with torch.no_grad():
        feature_dim = int(torch.flatten(body(torch.zeros(1, 3, image_size, image_size)), 1).shape[1])
    body.train(was_training)
    return TimmBackbone(body, feature_dim, embedding_size, dropout)


def create_backbone(arch: str, embedding_size: int, image_size: int = 112, dropout: float = 0.0) -> nn.Module:
    """Build backbone `arch` (registered name or `timm/<name>`); unknown arch -> ConfigError listing valid ones."""
    check_image_side(image_size, "image_size")
    if isinstance(embedding_size, bool) or not isinstance(embedding_size, int) or embedding_size < 1:
        raise ConfigError(f"embedding_size {embedding_size!r} must be a positive integer")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout {dropout!r} must be in [0, 1)")
    if arch.startswith(TIMM_PREFIX):
        return _create_timm(arch[len(TIMM_PREFIX):], embedding_size, image_size, dropout)
    names = list_models()
    if arch not in names:
        raise ConfigError(f"unknown backbone arch {arch!r}; valid: {', '.join(names)}, timm/<name>")
    return _REGISTRY[arch](embedding_size, image_size, dropout)
