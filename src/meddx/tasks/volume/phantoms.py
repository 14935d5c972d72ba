"""Generated 3-D phantoms: ellipsoid "lesions" in a noisy volume, with known masks and labels.

Small, seeded and fast, so the 3-D models can be trained and tested in seconds
with a ground truth that is exact. :func:`write_dicom_series` turns any volume
into a folder of single-frame DICOM slices (optionally with the header of a
real image as template), to exercise the series reader and the SEG writer.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def ellipsoid(shape: Sequence[int], centre: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    """Boolean mask of an axis-aligned ellipsoid in a volume of ``shape`` (voxel units)."""
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    total = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True))
    return np.asarray(total <= 1.0)


def make_phantom(
    shape: Sequence[int] = (24, 24, 24),
    *,
    n_lesions: int = 1,
    radius: tuple[float, float] = (2.5, 5.0),
    contrast: float = 1.0,
    noise: float = 0.35,
    rng: np.random.Generator | int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One phantom: ``(volume float32, mask uint8)`` of ``shape``.

    The background is smooth (a soft gradient plus Gaussian noise of ``noise``);
    each lesion is a random ellipsoid brighter by ``contrast`` whose voxels are 1
    in the mask. ``n_lesions=0`` gives a lesion-free volume (mask all 0).
    """
    rng = np.random.default_rng(rng)
    shape = tuple(int(n) for n in shape)
    mask = np.zeros(shape, dtype=np.uint8)
    for _ in range(n_lesions):
        radii = rng.uniform(*radius, size=3)
        centre = [rng.uniform(r + 1, n - r - 1) for n, r in zip(shape, radii, strict=True)]
        mask |= ellipsoid(shape, centre, radii).astype(np.uint8)
    ramp = np.linspace(-0.2, 0.2, shape[0], dtype=np.float32)[:, None, None]
    volume = ramp + contrast * mask + rng.normal(0.0, noise, size=shape)
    return volume.astype(np.float32), mask


def phantom_dataset(
    n: int,
    shape: Sequence[int] = (24, 24, 24),
    *,
    positive_fraction: float = 0.5,
    seed: int = 0,
    **options: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` phantoms as model inputs: ``(volumes (n, 1, D, H, W), masks (n, 1, D, H, W), labels (n,))``.

    A phantom is positive (label 1, one or two lesions) with probability
    ``positive_fraction``, else lesion-free (label 0). ``options`` go to :func:`make_phantom`.
    """
    rng = np.random.default_rng(seed)
    volumes, masks, labels = [], [], []
    for _ in range(n):
        positive = bool(rng.random() < positive_fraction)
        volume, mask = make_phantom(shape, n_lesions=int(rng.integers(1, 3)) if positive else 0, rng=rng, **options)
        volumes.append(volume[None])
        masks.append(mask[None])
        labels.append(int(positive))
    return np.stack(volumes), np.stack(masks), np.asarray(labels, dtype=np.int64)


def write_dicom_series(
    volume: np.ndarray,
    folder: str | Path,
    *,
    spacing: Sequence[float] = (2.0, 1.0, 1.0),
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    template: Any = None,
    series_uid: str | None = None,
    intercept: float = -1024.0,
    names: Sequence[str] | None = None,
) -> list[Path]:
    """Write ``volume`` ``(slices, rows, cols)`` as single-frame CT slices in ``folder``; return the paths.

    Slice ``k`` lies at ``origin + k * spacing[0]`` along z (axial, identity
    orientation); pixels are stored as int16 with RescaleIntercept ``intercept``
    (values are rounded to integers). ``template`` (a Dataset or path, e.g. the
    ``CT_small.dcm`` format sample) lends its patient, study, series and frame of
    reference; without one a minimal CT header is built. ``names`` sets the file
    names (default ``slice_000.dcm``, ...).
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    volume = np.asarray(volume)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if template is not None:
        base = pydicom.dcmread(template) if isinstance(template, (str, Path)) else copy.deepcopy(template)
        for keyword in ("PixelData", "LargestImagePixelValue", "SmallestImagePixelValue", "SliceLocation",
                        "WindowCenter", "WindowWidth"):
            if keyword in base:
                delattr(base, keyword)
    else:
        base = pydicom.Dataset()
        base.file_meta = FileMetaDataset()
        base.SOPClassUID = CTImageStorage
        base.Modality = "CT"
        base.PatientID = "PHANTOM"
        base.PatientName = "Phantom^Volume"
        base.StudyInstanceUID = generate_uid()
        base.FrameOfReferenceUID = generate_uid()
        base.StudyDate = base.SeriesDate = "20260101"
        base.SeriesNumber = 1
        base.Manufacturer = "meddx phantom"
    base.file_meta.MediaStorageSOPClassUID = base.SOPClassUID
    base.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    base.SeriesInstanceUID = series_uid or (base.get("SeriesInstanceUID") if template is not None else generate_uid())
    base.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    base.Rows, base.Columns = int(volume.shape[1]), int(volume.shape[2])
    base.PixelSpacing = [float(spacing[1]), float(spacing[2])]
    base.SliceThickness = float(spacing[0])
    base.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    base.SamplesPerPixel = 1
    base.PhotometricInterpretation = "MONOCHROME2"
    base.BitsAllocated, base.BitsStored, base.HighBit, base.PixelRepresentation = 16, 16, 15, 1
    base.RescaleSlope, base.RescaleIntercept = 1.0, float(intercept)
    base.RescaleType = "HU"
    paths = []
    for k, plane in enumerate(volume):
        ds = copy.deepcopy(base)
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [float(origin[0]), float(origin[1]), float(origin[2]) + k * float(spacing[0])]
        stored = np.clip(np.round(np.asarray(plane, dtype=np.float64) - intercept), -32768, 32767).astype(np.int16)
        ds.PixelData = stored.tobytes()
        ds["PixelData"].VR = "OW"
        path = folder / (names[k] if names is not None else f"slice_{k:03d}.dcm")
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


__all__ = ["ellipsoid", "make_phantom", "phantom_dataset", "write_dicom_series"]
