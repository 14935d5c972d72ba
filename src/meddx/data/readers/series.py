"""A folder of single-frame DICOM slices (one series) as a checked 3-D volume.

:func:`read_series` is the strict way to turn a series into ``(slices, rows,
cols)``: it sorts the slices along the slice normal (``ImagePositionPatient ·
(row direction × column direction)``; ``InstanceNumber`` when positions are
missing), applies RescaleSlope/RescaleIntercept (float32, Hounsfield units for
CT), and returns spacing ``(slice, row, col)`` mm with the voxel-to-patient
(LPS) affine. Every file is opened through
:func:`meddx.data.readers.dicom.open_dataset`, so the decode limits hold.

Where the folder reader of :mod:`meddx.data.readers.dicom` warns, this one
refuses, naming the files concerned:

* a gap (a distance between neighbours over 1.5x the median spacing: missing
  slices) names the gap and the two files around it; ``allow_gaps=True``
  reads on with a warning;
* two slices at the same position name both files;
* a file of another series, orientation or size names the odd file (the
  series most files belong to is the reference);
* a folder with no DICOM image is an EmptyDataError.

Use it as ``read(folder, reader="dicom_series")`` or ``read_series(folder)``;
``read(folder)`` without a reader still picks the lenient DICOM folder reader.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from meddx.data.readers._base import Reader, check_options, register_reader
from meddx.data.readers.dicom import (
    DICM_OFFSET,
    DicomReader,
    _axis_code,
    _decoding,
    _ids,
    _LazyDecodeErrors,
    _meta,
    _orientation,
    lps_affine,
    _pixel_spacing,
    _pixels,
    _position,
    open_dataset,
)
from meddx.data.sample import ImageSample
from meddx.exceptions import (
    ConfigError,
    DataFileNotFoundError,
    EmptyDataError,
    InvalidValueError,
    MissingFieldError,
    UnsupportedFormatError,
)

GAP_FACTOR = 1.5
"""A distance between neighbouring slices over this many median spacings is a gap (missing slices)."""

DUPLICATE_TOLERANCE = 0.01
"""Neighbours closer than this fraction of the median spacing (or 1 micrometre) are at the same position."""

_OPTIONS = frozenset({"allow_gaps", "series_uid", "voi", "force"})
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def _candidates(folder: Path) -> list[Path]:
    """Files of ``folder`` that look like DICOM: a ``.dcm``/``.dicom`` suffix or the ``DICM`` prefix."""
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.name.upper() == "DICOMDIR" or not entry.is_file():
            continue
        if not entry.name.lower().endswith((".dcm", ".dicom")):
            try:
                with open(entry, "rb") as fh:
                    if fh.read(DICM_OFFSET + 4)[DICM_OFFSET:] != b"DICM":
                        continue
            except OSError:
                continue
        found.append(entry)
    return found


def _odd_one(slices: list[tuple[Path, Any]], key: Any, field: str, what: str, hint: str) -> None:
    """Raise naming the first file whose ``key(ds)`` differs from the value most files share."""
    values = [key(ds) for _, ds in slices]
    common, _ = Counter(values).most_common(1)[0]
    for (file, _), value in zip(slices, values, strict=True):
        if value != common:
            example = next(f for (f, _), v in zip(slices, values, strict=True) if v == common)
            raise InvalidValueError(
                f"{what} {value} differs from {common} of the other {values.count(common)} slice(s) "
                f"(e.g. {example.name})",
                path=file, field=field, hint=hint,
            )


def _orientation_key(ds: Any) -> tuple[float, ...] | None:
    iop = _orientation(ds)
    return None if iop is None else tuple(round(float(v), 3) for v in iop.ravel())


def read_series(
    folder: str | Path,
    *,
    allow_gaps: bool = False,
    series_uid: str | None = None,
    voi: bool = False,
    force: bool = False,
) -> ImageSample:
    """Read one DICOM series (a folder of single-frame slices) into a ``(slices, rows, cols)`` volume.

    Args:
        folder: the folder holding the slices (other non-image DICOM objects are skipped).
        allow_gaps: read a series with missing slices, with a warning, instead of refusing it.
        series_uid: the SeriesInstanceUID to read when the folder holds several series.
        voi: apply the VOI LUT / window after rescaling.
        force: read files without the DICOM preamble.

    Returns:
        An :class:`~meddx.data.sample.ImageSample` with a float32 ``array`` in modality
        units, ``spacing`` (slice, row, col) mm, a 4x4 ``affine`` (voxel index
        (slice, row, col) -> patient LPS mm) and ``meta["files"]`` in volume order.

    Raises:
        EmptyDataError: no DICOM image in the folder.
        InvalidValueError: mixed series, orientations or sizes (naming the odd file),
            duplicated positions (naming both files), gaps (naming the files around it).
    """
    folder = Path(folder)
    if not folder.exists():
        raise DataFileNotFoundError("no such folder", path=folder, field="path",
                                    hint="Check the path and the current directory")
    if not folder.is_dir():
        raise ConfigError("a series is read from a folder of slices, not a file", path=folder, field="path",
                          hint="Pass the folder holding the .dcm slices, or read the file with read()")
    files = _candidates(folder)
    if not files:
        raise EmptyDataError("the folder holds no DICOM files", path=folder, field="folder contents",
                             hint="Point to a folder of .dcm slices of one series")
    errors = DicomReader.decode_errors
    slices: list[tuple[Path, Any]] = []
    skipped: list[str] = []
    for file in files:
        ds = open_dataset(file, force=force, stop_before_pixels=True)
        with _decoding(file, errors):
            if "Rows" not in ds or ds.get("WaveformSequence"):
                skipped.append(file.name)
                continue
            slices.append((file, ds))
    if not slices:
        raise EmptyDataError(f"none of the {len(files)} DICOM files holds an image", path=folder,
                             field="PixelData", hint="The folder holds only reports, waveforms or "
                             "presentation states; point to a folder of image slices")

    def uid_of(ds: Any) -> str:
        return str(ds.get("SeriesInstanceUID") or "").strip()

    if series_uid is not None:
        chosen = [(f, ds) for f, ds in slices if uid_of(ds) == str(series_uid)]
        if not chosen:
            found = ", ".join(sorted({uid_of(ds) for _, ds in slices}))
            raise ConfigError(f"series {series_uid!r} is not in the folder", path=folder, field="series_uid",
                              hint=f"Series found: {found}")
        slices = chosen
    with _decoding(folder, errors):
        _odd_one(slices, uid_of, "SeriesInstanceUID", "SeriesInstanceUID",
                 "The folder mixes series; remove the odd file or pass series_uid= to choose one")
        for file, ds in slices:
            if int(ds.get("NumberOfFrames") or 1) > 1:
                raise UnsupportedFormatError("a multi-frame file in a slice series", path=file,
                                             field="NumberOfFrames", hint="Read multi-frame files on their own")
        _odd_one(slices, lambda ds: (int(ds.Rows), int(ds.get("Columns") or 0)), "Rows", "size (rows, columns)",
                 "The folder mixes image sizes (a localizer or another series?); remove the odd file")
        _odd_one(slices, _orientation_key, "ImageOrientationPatient", "orientation",
                 "The folder mixes orientations (a localizer?); remove the odd file")
        ordered, positions, z_spacing, gaps = _sort(folder, slices, allow_gaps)

    arrays, first_info = [], None
    for file, _ in ordered:
        ds = open_dataset(file, force=force)
        with _decoding(file, errors):
            if not any(k in ds for k in _PIXEL_KEYWORDS):
                raise MissingFieldError("a slice of the series has no PixelData", path=file, field="PixelData",
                                        hint="The file may be truncated; remove it or re-export the series")
            arr, info = _pixels(ds, file, voi)
        if arr.ndim != 2:
            raise UnsupportedFormatError(f"slice pixels have shape {arr.shape}, not (rows, columns)", path=file,
                                         field="SamplesPerPixel", hint="Colour slices cannot form a volume")
        first_info = first_info or info
        arrays.append(arr.astype(np.float32, copy=False))
    volume = np.stack(arrays)

    first_file, first_ds = ordered[0]
    row_col = _pixel_spacing(first_ds, first_file)
    iop = _orientation(first_ds)
    spacing = (z_spacing, *row_col) if row_col is not None else None
    meta = _meta(first_ds)
    for keyword in ("SOPInstanceUID", "InstanceNumber", "ImagePositionPatient"):
        meta.pop(keyword, None)
    meta.update(n_slices=len(ordered), files=[f.name for f, _ in ordered],
                sop_instance_uids=[str(ds.get("SOPInstanceUID") or "") for _, ds in ordered])
    if skipped:
        meta["skipped"] = skipped
    if gaps:
        meta["gaps"] = gaps
    orientation = affine = None
    if positions is not None and iop is not None:
        normal = np.cross(iop[0], iop[1])
        slice_vector = normal * z_spacing
        orientation = (_axis_code(slice_vector), _axis_code(iop[1]), _axis_code(iop[0]))
        meta["slice_positions"] = [[float(v) for v in p] for p in positions]
        if row_col is not None:
            affine = lps_affine(slice_vector, iop, row_col, positions[0])
            meta["coordinate_system"] = "LPS"
    patient_id, study_id = _ids(first_ds)
    assert first_info is not None
    return ImageSample(
        path=folder, format=DicomSeriesReader.name, patient_id=patient_id, study_id=study_id, meta=meta,
        array=volume, spacing=spacing, orientation=orientation, affine=affine,
        modality=str(first_ds.get("Modality") or "").strip() or None,
        photometric=first_info["photometric"], window=first_info["window"],
    )


def _sort(
    folder: Path, slices: list[tuple[Path, Any]], allow_gaps: bool
) -> tuple[list[tuple[Path, Any]], np.ndarray | None, float, list[dict[str, Any]]]:
    """Slices in volume order, their positions, the slice spacing and the gaps found (if allowed)."""
    first = slices[0][1]
    iop = _orientation(first)
    positions = [_position(ds) for _, ds in slices]
    if iop is None or any(p is None for p in positions):
        warnings.warn(f"{folder}: slices lack ImagePositionPatient/ImageOrientationPatient; ordering by "
                      "InstanceNumber, slice spacing from SpacingBetweenSlices/SliceThickness",
                      UserWarning, stacklevel=3)
        numbers = [int(ds.get("InstanceNumber") or 0) for _, ds in slices]
        order = sorted(range(len(slices)), key=lambda i: numbers[i])
        for a, b in zip(order, order[1:]):
            if numbers[a] == numbers[b]:
                raise InvalidValueError(
                    f"{slices[a][0].name} and {slices[b][0].name} have the same InstanceNumber {numbers[a]}",
                    path=folder, field="InstanceNumber", hint="Duplicated slices; keep one of them")
        thickness = float(first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0)
        return [slices[i] for i in order], None, abs(thickness) or 1.0, []
    normal = np.cross(iop[0], iop[1])
    points = np.stack(positions)  # type: ignore[arg-type]
    distance = points @ normal
    order = [int(i) for i in np.argsort(distance, kind="stable")]
    ordered = [slices[i] for i in order]
    along = distance[order]
    if len(order) == 1:
        thickness = float(first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0)
        return ordered, points[order], abs(thickness) or 1.0, []
    steps = np.diff(along)
    # the median step is the slice spacing; with two steps, one of which may be a gap, the smaller one
    median = float(np.median(steps)) if len(steps) > 2 else float(steps.min())
    for i, step in enumerate(steps):
        if step < max(1e-3, DUPLICATE_TOLERANCE * float(np.median(steps))):
            a, b = ordered[i][0].name, ordered[i + 1][0].name
            raise InvalidValueError(
                f"{a} and {b} lie at the same position ({along[i]:.3f} mm along the slice normal)",
                path=folder, field="ImagePositionPatient",
                hint="Duplicated slices (or several acquisitions / time points in one folder); keep one per position",
            )
    gaps: list[dict[str, Any]] = []
    for i, step in enumerate(steps):
        if step > GAP_FACTOR * median:
            a, b = ordered[i][0].name, ordered[i + 1][0].name
            missing = max(int(round(step / median)) - 1, 1)
            gaps.append({"after": a, "before": b, "distance_mm": round(float(step), 4), "missing": missing})
    if gaps:
        first_gap = gaps[0]
        message = (
            f"gap of {first_gap['distance_mm']:.3f} mm between {first_gap['after']} and {first_gap['before']} "
            f"(median spacing {median:.3f} mm): about {first_gap['missing']} slice(s) missing"
            + (f"; {len(gaps)} gaps in all" if len(gaps) > 1 else "")
        )
        if not allow_gaps:
            raise InvalidValueError(message, path=folder, field="ImagePositionPatient",
                                    hint="Complete the series, or pass allow_gaps=True to read it with the "
                                    "median spacing")
        warnings.warn(f"{folder}: {message}; reading on with the median spacing", UserWarning, stacklevel=3)
    return ordered, points[order], median, gaps


@register_reader
class DicomSeriesReader(Reader):
    """A folder holding one DICOM slice series, read strictly (see :func:`read_series`).

    Never picked automatically (``read(folder)`` uses the ``dicom`` reader);
    choose it with ``read(folder, reader="dicom_series")``.

    Options: ``allow_gaps``, ``series_uid``, ``voi``, ``force``.
    """

    name: ClassVar[str] = "dicom_series"
    directories: ClassVar[bool] = True
    decode_errors = _LazyDecodeErrors()  # type: ignore[assignment]

    def read(self, path: Path, **options: Any) -> ImageSample:
        check_options(options, _OPTIONS, Path(path), "DICOM series")
        return read_series(path, **options)


__all__ = ["DicomSeriesReader", "read_series"]
