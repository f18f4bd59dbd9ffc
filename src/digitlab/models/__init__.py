"""Models: the seeds' classic nets and digitlab's fast ones, all behind one registry."""

from digitlab.models.registry import ModelInfo, create_model, list_models, register_model

__all__ = ["ModelInfo", "create_model", "list_models", "register_model"]
