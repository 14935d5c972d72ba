"""3-D volumes: a small MONAI classifier and segmenter, phantoms to train them, and a slice-wise fallback.

- :mod:`~meddx.tasks.volume.phantoms`: ellipsoid lesions in noisy volumes with exact masks and labels,
  and :func:`write_dicom_series` to store any volume as a DICOM slice series;
- :mod:`~meddx.tasks.volume.networks`: ``classifier_3d`` (DenseNet), ``segmenter_3d`` / ``segmenter_2d`` (UNet);
- :mod:`~meddx.tasks.volume.training`: ``fit_classifier``, ``fit_segmenter``, ``predict_proba``,
  ``predict_mask``, ``dice``;
- :mod:`~meddx.tasks.volume.inference`: ``load_volume`` (NIfTI or DICOM series through the data layer),
  ``predict_volume`` (3-D, or slice by slice when the model is 2-D or the volume too large).

Names are imported lazily: torch and MONAI load when a network is built.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "make_phantom": "phantoms",
    "phantom_dataset": "phantoms",
    "write_dicom_series": "phantoms",
    "classifier_3d": "networks",
    "segmenter_2d": "networks",
    "segmenter_3d": "networks",
    "dice": "training",
    "fit_classifier": "training",
    "fit_segmenter": "training",
    "predict_mask": "training",
    "predict_proba": "training",
    "Volume": "inference",
    "load_volume": "inference",
    "predict_volume": "inference",
    "slicewise": "inference",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"meddx.tasks.volume.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'meddx.tasks.volume' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
