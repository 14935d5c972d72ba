"""Explanations for meddx classifiers: class activation maps and the checks they need.

* :mod:`~meddx.explain.cam` — Grad-CAM, Grad-CAM++ and Score-CAM
  (``pytorch_grad_cam``) for every model of the registry, with the right
  target layer per architecture, no hooks left behind and the model's state
  restored.
* :mod:`~meddx.explain.overlay` — heat-map overlays on the (already windowed)
  image, as arrays or PNG files.
* :mod:`~meddx.explain.sanity` — the parameter-randomisation sanity check
  (Adebayo et al. 2018) and deletion/insertion faithfulness against random
  maps (Petsiuk et al. 2018): a CAM is only shown to a clinician if it passes.
* :mod:`~meddx.explain.localisation` — energy-in-box and pointing-game scores
  against annotated bounding boxes.

The torch-based names (CAMs and sanity checks) are imported lazily, on first
use: ``from meddx.explain import overlay, energy_in_boxes`` does not load torch
or ``pytorch_grad_cam`` (several seconds); only :mod:`~meddx.explain.cam` and
:mod:`~meddx.explain.sanity` need the ``train`` and ``explain`` extras.
(``meddx.explain.overlay`` is the function; the module is
``sys.modules["meddx.explain.overlay"]``.)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from meddx.explain.localisation import boxes_mask, energy_in_boxes, pointing_game, rescale_boxes
from meddx.explain.overlay import COLORMAPS, overlay, save_overlay

_LAZY: dict[str, str] = {
    "CAM_METHODS": "cam",
    "compute_cam": "cam",
    "default_target_layer": "cam",
    "list_cam_methods": "cam",
    "register_cam_method": "cam",
    "BASELINES": "sanity",
    "deletion_insertion": "sanity",
    "faithfulness": "sanity",
    "random_map_baseline": "sanity",
    "randomisation_test": "sanity",
    "randomize_weights": "sanity",
}

__all__ = [
    "BASELINES",
    "CAM_METHODS",
    "COLORMAPS",
    "boxes_mask",
    "compute_cam",
    "default_target_layer",
    "deletion_insertion",
    "energy_in_boxes",
    "faithfulness",
    "list_cam_methods",
    "overlay",
    "pointing_game",
    "random_map_baseline",
    "randomisation_test",
    "randomize_weights",
    "register_cam_method",
    "rescale_boxes",
    "save_overlay",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from meddx.explain.cam import (
        CAM_METHODS,
        compute_cam,
        default_target_layer,
        list_cam_methods,
        register_cam_method,
    )
    from meddx.explain.sanity import (
        BASELINES,
        deletion_insertion,
        faithfulness,
        random_map_baseline,
        randomisation_test,
        randomize_weights,
    )


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'meddx.explain' has no attribute {name!r}")
    loaded = importlib.import_module(f"meddx.explain.{module}")
    for other, where in _LAZY.items():  # bind every name of that module at once
        if where == module:
            globals()[other] = getattr(loaded, other)
    return globals()[name]


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
