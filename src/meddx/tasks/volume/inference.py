"""Volumes in, masks out: load a NIfTI file or DICOM series, run a 3-D model, or a 2-D one slice by slice.

:func:`load_volume` goes through the data layer (:func:`meddx.data.read`):
NIfTI files with the NIfTI reader, folders with the strict DICOM series reader
(:mod:`meddx.data.readers.series`). :func:`predict_volume` runs a 3-D
segmenter on the whole volume (padded to what its strides need), or falls back
to :func:`slicewise` (a 2-D model on each slice, stacked) when the model is
2-D or the volume has more voxels than ``max_voxels``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError, InvalidValueError
from meddx.tasks.volume.training import _threads, normalise

MAX_VOXELS = 8_000_000
"""Above this many voxels a 3-D model is not run on the whole volume (memory); the 2-D fallback is used."""


@dataclass
class Volume:
    """A 3-D array with the geometry the data layer gave it.

    ``array`` keeps the reader's axis order: ``(slices, rows, cols)`` for DICOM,
    ``(x, y, z)`` (RAS) for NIfTI. ``spacing`` and ``affine`` follow the same axes.
    """

    array: np.ndarray
    spacing: tuple[float, ...] | None = None
    affine: np.ndarray | None = None
    source: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def load_volume(path: str | Path, *, frame: int = 0, **options: Any) -> Volume:
    """Read a 3-D volume: a NIfTI file (a 4-D one gives time point ``frame``), a DICOM series folder,
    or a DICOM file (multi-frame, or one slice as a 1-slice volume). ``options`` go to the reader."""
    from meddx.data import read

    path = Path(path)
    sample = read(path, reader="dicom_series", **options) if path.is_dir() else read(path, **options)
    array = getattr(sample, "array", None)
    if array is None:
        raise InvalidValueError(f"{type(sample).__name__} is not an image volume", path=path, field="format",
                                hint="Pass a NIfTI file, a DICOM series folder or a DICOM image")
    spacing = tuple(sample.spacing) if sample.spacing is not None else None
    if array.ndim == 4 and sample.format == "nifti":
        if not 0 <= frame < array.shape[3]:
            raise ConfigError(f"frame {frame} does not exist (the file has {array.shape[3]})", path=path,
                              field="frame", hint=f"Pass frame=0..{array.shape[3] - 1}")
        array = array[..., frame]
    elif array.ndim == 2:
        array = array[None]
        spacing = (1.0, *spacing) if spacing is not None and len(spacing) == 2 else spacing
    if array.ndim != 3:
        raise InvalidValueError(f"the image has shape {array.shape}, not a 3-D volume", path=path, field="shape",
                                hint="Colour images and 5-D files are not volumes")
    return Volume(array=np.asarray(array, dtype=np.float32), spacing=spacing[:3] if spacing else None,
                  affine=sample.affine, source=path,
                  meta={"format": sample.format, "frame": frame,
                        "files": [str(path / f) for f in (sample.meta or {}).get("files", [])] if path.is_dir() else []})


def is_2d(model: Any) -> bool:
    """True if the first convolution of ``model`` is 2-D (so it takes slices, not volumes)."""
    import torch

    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            return True
        if isinstance(module, (torch.nn.Conv3d, torch.nn.ConvTranspose3d)):
            return False
    raise ConfigError("the model has no 2-D or 3-D convolution", field="model",
                      hint="Pass a 2-D or 3-D segmentation network")


def _multiple(model: Any) -> int:
    """What each side must be divisible by: the product of a MONAI UNet's strides (1 otherwise)."""
    strides = getattr(model, "strides", None)
    if not strides:
        return 1
    total = 1
    for s in strides:
        total *= int(s) if np.isscalar(s) else int(max(s))
    return total


def slicewise(model_2d: Any, volume: np.ndarray, *, batch_size: int = 16, threads: int | None = 1) -> np.ndarray:
    """Apply a 2-D segmenter to each slice along axis 0 and stack: probabilities ``(classes, D, H, W)``.

    Each slice is z-scored on its own (as :func:`~meddx.tasks.volume.training.fit_segmenter`
    does for 2-D samples) and padded to what the network's strides need.
    """
    import torch

    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3:
        raise ConfigError(f"volume has shape {volume.shape}, not (slices, rows, cols)", field="volume")
    k = _multiple(model_2d)
    pad = [(0, 0), (0, 0), (0, -volume.shape[1] % k), (0, -volume.shape[2] % k)]
    x = torch.from_numpy(np.pad(normalise(volume[:, None]), pad, mode="edge"))
    outputs = []
    with _threads(threads), torch.no_grad():
        model_2d.eval()
        for begin in range(0, len(x), batch_size):
            outputs.append(torch.softmax(model_2d(x[begin : begin + batch_size]), dim=1).numpy())
    prob = np.concatenate(outputs)[:, :, : volume.shape[1], : volume.shape[2]]
    return np.moveaxis(prob, 1, 0)


def _whole(model: Any, volume: np.ndarray, threads: int | None) -> np.ndarray:
    import torch

    k = _multiple(model)
    pad = [(0, 0), (0, 0)] + [(0, -n % k) for n in volume.shape]
    x = torch.from_numpy(np.pad(normalise(volume[None, None]), pad, mode="edge"))
    with _threads(threads), torch.no_grad():
        model.eval()
        prob = torch.softmax(model(x), dim=1).numpy()[0]
    d, h, w = volume.shape
    return prob[:, :d, :h, :w]


def predict_volume(
    model: Any,
    volume: np.ndarray | Volume,
    *,
    model_2d: Any = None,
    max_voxels: int = MAX_VOXELS,
    threads: int | None = 1,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Segment a volume: ``(mask (D, H, W) uint8, probability (classes, D, H, W), mode)``.

    ``mode`` is ``"3d"`` (the 3-D model on the whole volume) or ``"slicewise"``:
    used when ``model`` itself is 2-D, or when the volume has more than
    ``max_voxels`` voxels and ``model_2d`` is given (without one that is a ConfigError).
    """
    array = volume.array if isinstance(volume, Volume) else np.asarray(volume, dtype=np.float32)
    if array.ndim != 3:
        raise ConfigError(f"volume has shape {array.shape}, not 3-D", field="volume",
                          hint="Pick one time point or channel of a 4-D image first (load_volume(frame=...))")
    if is_2d(model):
        prob, mode = slicewise(model, array, threads=threads), "slicewise"
    elif array.size > max_voxels:
        if model_2d is None:
            raise ConfigError(
                f"the volume has {array.size:,} voxels, more than max_voxels={max_voxels:,} for a 3-D model",
                field="max_voxels", hint="Pass model_2d= to segment it slice by slice, or raise max_voxels",
            )
        prob, mode = slicewise(model_2d, array, threads=threads), "slicewise"
    else:
        prob, mode = _whole(model, array, threads), "3d"
    return prob.argmax(axis=0).astype(np.uint8), prob, mode


__all__ = ["MAX_VOXELS", "Volume", "is_2d", "load_volume", "predict_volume", "slicewise"]
