"""Source images for the DICOM writers: open them (guarded), check they are images, check shapes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError, EmptyDataError, InvalidValueError, LabelShapeError, MissingFieldError

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

_TYPE2_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                   "StudyDate", "StudyTime", "ReferringPhysicianName")
"""Patient and study attributes a derived object copies; present but empty is valid (DICOM type 2)."""


_REFERENCE_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
"""What a derived object references its source by (type 1 in every image IOD)."""


def _with_type2(ds: Any) -> Any:
    """``ds``, or a copy with the missing type-2 patient/study attributes added empty (highdicom copies them)."""
    missing = [k for k in _TYPE2_KEYWORDS if k not in ds]
    if not missing:
        return ds
    import copy

    filled = copy.deepcopy(ds)
    for keyword in missing:
        setattr(filled, keyword, "")
    return filled


def where(ds: Any) -> str | None:
    """The file a dataset was read from, for error messages."""
    name = getattr(ds, "filename", None)
    return str(name) if isinstance(name, (str, Path)) else None


def load_sources(source: Any) -> list[Any]:
    """Datasets for ``source``: a Dataset, a path, or a list of either; each must be an image.

    Paths are opened with :func:`meddx.data.readers.dicom.open_dataset` (decode
    limits, truncation checks). A data set without pixel data (an ECG waveform,
    a report) is a MissingFieldError naming its file.
    """
    from pydicom.dataset import Dataset

    from meddx.data.readers.dicom import open_dataset

    items = list(source) if isinstance(source, (list, tuple)) else [source]
    if not items:
        raise EmptyDataError("no source image given", field="source",
                             hint="Pass the DICOM image(s) the mask or findings were computed on")
    datasets = []
    for item in items:
        if isinstance(item, Dataset):
            ds = item
        elif isinstance(item, (str, Path)):
            ds = open_dataset(Path(item))
        else:
            raise ConfigError(f"a source must be a pydicom Dataset or a path, not {type(item).__name__}",
                              field="source")
        if not any(k in ds for k in _PIXEL_KEYWORDS) or "Rows" not in ds or "Columns" not in ds:
            sop = getattr(ds.get("SOPClassUID"), "name", None) or str(ds.get("SOPClassUID") or "unknown")
            raise MissingFieldError(
                f"the source is not an image (SOP class {sop}): it has no PixelData, Rows or Columns",
                path=where(ds), field="PixelData",
                hint="A SEG or SR must reference the image the model read (CT, MR, DX, ...), "
                "not a waveform, report or presentation state",
            )
        absent = [k for k in _REFERENCE_UIDS if not ds.get(k)]
        if absent:
            raise MissingFieldError(
                f"the source image has no {' or '.join(absent)}, which a SEG or SR must reference",
                path=where(ds), field=absent[0],
                hint="Give the image as stored by its modality or PACS (every DICOM image carries its study, "
                "series and instance UIDs); a file that lost them cannot be linked to a derived object",
            )
        datasets.append(_with_type2(ds))
    first = datasets[0]
    for ds in datasets[1:]:
        for keyword in ("Rows", "Columns", "FrameOfReferenceUID", "StudyInstanceUID"):
            if ds.get(keyword) != first.get(keyword):
                raise InvalidValueError(
                    f"{keyword} is {ds.get(keyword)!r} here but {first.get(keyword)!r} in the first source",
                    path=where(ds), field=keyword,
                    hint="All source images of one SEG must come from one series with the same size and "
                    "frame of reference",
                )
    return datasets


def frame_count(datasets: Sequence[Any]) -> int:
    """Frames the mask must have: one per single-frame source, NumberOfFrames for one multi-frame source."""
    if len(datasets) == 1:
        return int(datasets[0].get("NumberOfFrames") or 1)
    return len(datasets)


def check_mask_shape(mask: np.ndarray, datasets: Sequence[Any], *, name: str = "mask") -> np.ndarray:
    """``mask`` as ``(frames, rows, cols)``; a 2-D mask is taken as one frame. Wrong shape: LabelShapeError."""
    first = datasets[0]
    rows, cols, frames = int(first.Rows), int(first.Columns), frame_count(datasets)
    array = np.asarray(mask)
    if array.ndim == 2:
        array = array[None]
    if array.shape != (frames, rows, cols):
        raise LabelShapeError(
            f"{name} has shape {tuple(np.shape(mask))} but the source is {frames} frame(s) of "
            f"{rows} rows x {cols} columns",
            path=where(first), field=name,
            hint=f"Give a {name} of shape ({frames}, {rows}, {cols})"
            + (f" or ({rows}, {cols})" if frames == 1 else "")
            + ", one frame per source image in the order given",
        )
    return array


__all__ = ["check_mask_shape", "frame_count", "load_sources", "where"]
