"""Models: the seeds' classic nets and digitlab's fast ones, all behind one registry.

Each model file registers its models when imported; this is where they are imported (timm's
way), so the registry itself imports no model file and nothing imports in a circle.
"""

from digitlab.models import cifar_fast, cnn, fast, lenet, mlp, vgg  # noqa: F401  (each registers its models)
from digitlab.models.registry import (
    ModelInfo,
    create_model,
    is_import_path,
    list_models,
    model_info,
    register_model,
)

__all__ = ["ModelInfo", "create_model", "is_import_path", "list_models", "model_info", "register_model"]
