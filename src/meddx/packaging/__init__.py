"""Model packages: the model card and the local registry.

A package is a run folder with ``package.json`` and ``model.safetensors``;
:mod:`meddx.packaging.card` renders its ``MODEL_CARD.md`` and
:mod:`meddx.packaging.registry` keeps versioned copies under
``$MEDDX_HOME/models/<name>/<version>/``. Only the standard library is imported
here, so resolving a model reference stays free at start-up.
"""

from meddx.packaging.card import render_card, write_card
from meddx.packaging.registry import (
    get,
    list_models,
    parse_ref,
    read_package,
    register,
    registry_dir,
    resolve,
    write_package,
)

__all__ = [
    "get",
    "list_models",
    "parse_ref",
    "read_package",
    "register",
    "registry_dir",
    "render_card",
    "resolve",
    "write_card",
    "write_package",
]
