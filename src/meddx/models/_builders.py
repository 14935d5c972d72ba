"""The table of model builders (a leaf module: model families import it to register themselves)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Builder = Callable[..., Any]
MODELS: dict[str, Builder] = {}


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Decorator: register a builder ``(num_classes, in_chans, **kw) -> nn.Module`` as ``name``."""

    def decorator(func: Builder) -> Builder:
        if name in MODELS:
            raise ValueError(f"model {name!r} is already registered")
        MODELS[name] = func
        return func

    return decorator
