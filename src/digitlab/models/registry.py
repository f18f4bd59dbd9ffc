"""The model registry: a decorator and a dict (timm's idea, without its global sprawl).

The registry imports no model file: ``digitlab.models`` (its ``__init__``) imports each one, and
each registers itself. Besides registered names, a model can be an import path,
``package.module:ClassName``: any ``nn.Module`` class (or function returning one) that takes the
keyword arguments ``num_classes``, ``in_channels`` and ``image_size``. A checkpoint stores the
name as given, so a run of your own network rebuilds it from the same import path.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from digitlab.errors import DigitlabError, unknown_name

# The three keyword arguments every model constructor takes (the data's shape).
SHAPE_ARGS = ("num_classes", "in_channels", "image_size")
_IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")

# "seed NNN" in model descriptions and preset names: the five tutorials digitlab started from.
SEED_TUTORIALS = {
    "000": "MNIST with pytorch/examples' CNN (Adadelta, 14 epochs), then ten mouse-drawn digits",
    "001": "MNIST with a two-block CNN, a sample grid and loss/accuracy curves (365-day camp)",
    "002": "FC vs CNN at equal size, shuffled pixels, then CIFAR-10 with Net and VGG",
    "003": "LeNet-5 explained and trained, then read on phone photos of digits",
    "004": "an image folder of digits, your own network (MyNetwork), a classification report",
}


@dataclass(frozen=True)
class ModelInfo:
    name: str  # registry name, or the import path of a model of your own
    description: str  # one line: what it is and, for a seed's model, which tutorial it comes from
    fn: Callable[..., nn.Module]  # the constructor (keyword arguments only for registered models)
    seed: str | None = None  # "000".."004": the tutorial (SEED_TUTORIALS) whose network this is; None for digitlab's
    # digitlab's module names -> the seed's own ones, for `digitlab export --seed-format`;
    # empty where the seed used the same names (or for a model that is not a seed's).
    seed_keys: dict[str, str] = field(default_factory=dict)
    imported: bool = False  # True for ``package.module:ClassName`` models


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    name: str, description: str, *, seed: str | None = None, seed_keys: dict[str, str] | None = None
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a constructor. It must accept keyword arguments num_classes, in_channels, image_size.

    ``seed`` names the tutorial a seed's network comes from; ``seed_keys`` renames digitlab's module
    names to the seed's own where they differ (``digitlab export --seed-format``).
    """

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        if seed is not None and seed not in SEED_TUTORIALS:
            raise ValueError(f"model {name!r}: unknown seed {seed!r}")
        _REGISTRY[name] = ModelInfo(name, description, fn, seed, dict(seed_keys or {}))
        return fn

    return deco


def is_import_path(name: str) -> bool:
    """True for ``package.module:ClassName`` (a model of your own), False for a registry name."""
    return ":" in name


def _import_model(path: str) -> ModelInfo:
    """Import ``package.module:ClassName`` and check that it takes the three shape arguments."""
    if not _IMPORT_PATH.fullmatch(path):
        raise DigitlabError(f"model {path!r} is not an import path; write it as package.module:ClassName")
    module_name, _, attr = path.partition(":")
    # `digitlab` runs as a console script, whose sys.path starts at the script's folder, not the
    # current one: add the current folder, as `python -m` and uvicorn do, so ./mynet.py imports.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ModuleNotFoundError, or whatever the user's module raised on import
        raise DigitlabError(
            f"cannot import {module_name!r} for model {path!r} ({type(exc).__name__}: {exc}); "
            "run digitlab from the folder that holds it or put that folder on PYTHONPATH"
        ) from exc
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise DigitlabError(f"module {module_name!r} has no class or function {attr!r} (model {path!r})")
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError) as exc:
        raise DigitlabError(f"model {path!r}: cannot read its arguments ({exc})") from exc
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    missing = [a for a in SHAPE_ARGS if a not in params and not takes_any]
    if missing:
        raise DigitlabError(
            f"model {path!r} must take the keyword arguments num_classes, in_channels and image_size; "
            f"it lacks {', '.join(missing)}"
        )
    doc = (inspect.getdoc(fn) or "").strip().splitlines()
    description = doc[0] if doc else f"your own model, imported from {module_name}"
    return ModelInfo(path, description, fn, imported=True)


def model_info(name: str) -> ModelInfo:
    """The registered model ``name``, or the model class an import path names.

    Raises:
        DigitlabError: an unknown name, or an import path that cannot be imported or does not
            take ``num_classes``, ``in_channels`` and ``image_size``.
    """
    if is_import_path(name):
        return _import_model(name)
    if name not in _REGISTRY:
        raise unknown_name("model", name, list(_REGISTRY))
    return _REGISTRY[name]


def list_models() -> list[ModelInfo]:
    """Every registered model, in registration order (import paths are not listed)."""
    return list(_REGISTRY.values())


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a model by registry name or import path. Unknown keyword arguments raise TypeError (no silent typos)."""
    info = model_info(name)
    if not info.imported:
        return info.fn(**kwargs)
    try:
        model = info.fn(**kwargs)
    except TypeError as exc:
        raise DigitlabError(f"model {name!r} does not take these arguments ({exc})") from exc
    if not isinstance(model, nn.Module):
        raise DigitlabError(f"model {name!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model
