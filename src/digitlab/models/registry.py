"""The model registry: a decorator and a dict (timm's idea, without its global sprawl)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from digitlab.errors import unknown_name


@dataclass(frozen=True)
class ModelInfo:
    name: str
    description: str
    fn: Callable[..., nn.Module]


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(name: str, description: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a constructor. It must accept keyword arguments num_classes, in_channels, image_size."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelInfo(name, description, fn)
        return fn

    return deco


def _ensure_loaded() -> None:
    # Explicit imports of every model file; each one registers itself.
    from digitlab.models import cnn, fast, lenet, mlp, vgg  # noqa: F401


def list_models() -> list[ModelInfo]:
    _ensure_loaded()
    return list(_REGISTRY.values())


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model by name. Unknown keyword arguments raise TypeError (no silent typos)."""
    _ensure_loaded()
    if name not in _REGISTRY:
        raise unknown_name("model", name, list(_REGISTRY))
    return _REGISTRY[name].fn(**kwargs)
