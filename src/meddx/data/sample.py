"""Typed samples: what every reader returns.

A sample carries the data as a numpy array (or a table) and the metadata a
model or a clinician needs to interpret it: pixel spacing and orientation for
images, sampling rate and physical units for signals, identifiers for the
patient and study. Readers fill what the format holds and leave the rest None.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Sample:
    """Fields shared by every sample.

    Attributes:
        path: the file or folder the sample was read from.
        format: the reader's name (``"dicom"``, ``"nifti"``, ``"wfdb"``, ...).
        patient_id: the patient identifier where the format has one.
        study_id: the study (or record) identifier where the format has one.
        meta: every other piece of metadata, keyed by the format's own names.
    """

    path: Path | None
    format: str
    patient_id: str | None = None
    study_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """A short name of the sample type (``image``, ``signal``, ``table``, ...)."""
        return type(self).__name__.removesuffix("Sample").lower()


@dataclass
class ImageSample(Sample):
    """A 2-D image, a multi-frame image or a 3-D/4-D volume.

    Attributes:
        array: pixel data in physical units where the format defines them
            (Hounsfield units for CT after rescale). Shapes: ``(H, W)``,
            ``(H, W, C)`` for colour, ``(F, H, W[, C])`` for multi-frame, and
            ``(X, Y, Z[, T])`` for NIfTI volumes in RAS order.
        spacing: size of a pixel/voxel in mm along each spatial axis of ``array``
            (row, column[, slice] for DICOM; x, y, z for NIfTI).
        orientation: axis codes, e.g. ``("R", "A", "S")``, where known.
        affine: the 4x4 voxel-to-world matrix where known.
        modality: DICOM modality code (``CT``, ``MR``, ``US``, ``DX``...) or None.
        photometric: ``MONOCHROME2``, ``RGB``, ... (MONOCHROME1 is inverted on read).
        window: (center, width) for display, where the file gives one.
    """

    array: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    spacing: tuple[float, ...] | None = None
    orientation: tuple[str, ...] | None = None
    affine: np.ndarray | None = None
    modality: str | None = None
    photometric: str | None = None
    window: tuple[float, float] | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)


@dataclass
class SignalSample(Sample):
    """A multi-channel time series (ECG, PPG, EEG, actigraphy ...).

    Attributes:
        data: ``(n_samples, n_channels)`` float array in physical units.
        fs: sampling rate in Hz.
        channel_names: one name per channel.
        units: one physical unit per channel (``mV``, ``uV``, ``bpm``...).
        annotations: events as rows ``(onset_s, duration_s, label)``.
    """

    data: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    fs: float = 0.0
    channel_names: list[str] = field(default_factory=list)
    units: list[str] = field(default_factory=list)
    annotations: list[tuple[float, float, str]] = field(default_factory=list)

    @property
    def n_samples(self) -> int:
        return int(self.data.shape[0])

    @property
    def n_channels(self) -> int:
        return int(self.data.shape[1]) if self.data.ndim == 2 else 0

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.fs if self.fs else 0.0


@dataclass
class TableSample(Sample):
    """A table of typed columns (CSV with a schema, clinical records).

    Attributes:
        frame: a pandas DataFrame with the declared dtypes; missing values are NA.
        units: unit per column where declared.
    """

    frame: Any = None  # pandas.DataFrame; typed as Any to keep pandas import lazy
    units: dict[str, str] = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        return 0 if self.frame is None else len(self.frame)


@dataclass
class RecordSample(Sample):
    """Clinical records from FHIR bundles or HL7 v2 messages, as typed rows.

    Attributes:
        patients: one row per patient (id, family, given, sex, birth_date).
        observations: one row per observation (patient_id, code, system,
            display, value, unit, time, status).
        resources: count of each resource / segment type found.
    """

    patients: Any = None  # pandas.DataFrame
    observations: Any = None  # pandas.DataFrame
    resources: dict[str, int] = field(default_factory=dict)


@dataclass
class LabelledImagesSample(Sample):
    """A labelled image collection: a MedMNIST ``.npz`` or an image folder with ``labels.csv``.

    Attributes:
        splits: split name -> (images ``(N, H, W[, C])`` uint8, labels ``(N,)`` int64).
        class_names: label names in index order where known.
        files: split name -> file names (image folders only).
    """

    splits: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    class_names: list[str] | None = None
    files: dict[str, list[str]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """Number of samples per split."""
        return {name: int(len(labels)) for name, (_, labels) in self.splits.items()}


__all__ = [
    "ImageSample",
    "LabelledImagesSample",
    "RecordSample",
    "Sample",
    "SignalSample",
    "TableSample",
]
