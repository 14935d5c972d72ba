"""Model factory and registry: ``create_model(name, num_classes, in_chans, pretrained=...)``."""

from meddx.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
